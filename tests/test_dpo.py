"""DPO training on the tiny random Llama: config checks, learning, safety, checkpoints, the CLI."""

import json
import threading
from pathlib import Path

import pytest
import torch

import playground.training.dpo as dpo
from cli.common import run_cli
from cli.train import main as train_main
from cli.train import parse_args as train_args
from playground.core.errors import PlaygroundError
from playground.data.rows import PreferenceRow
from playground.models import checkpoints
from playground.models.checkpoints import pairs_sha256
from playground.models.roles import LoraSettings, Models, ModelsConfig, adapter_params, load_models
from playground.scoring.encoding import encode
from playground.scoring.pairs import EncodedPair, encode_pairs, pair_logps
from playground.scoring.scorer import completion_token_logps
from playground.training.dpo import LOSSES, DPOConfig, heldout_count, train_dpo

QUESTIONS = ["Say hi.", "Two plus two?", "The capital of France?", "Write a poem.", "Numbers please.",
             "Yes or no?", "Good answer?", "Short answer?", "The sea?", "Hello?"]
FAST = {"lr": 5e-3, "batch_size": 4}  # a tiny random model needs a bigger step to move in a few steps


def separable_pairs(n: int = 10) -> list[PreferenceRow]:
    """Chosen always the same short reply, rejected always the same other reply: trivially learnable."""
    return [PreferenceRow([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" ({i})"}],
                          [{"role": "assistant", "content": "Yes, good answer."}],
                          [{"role": "assistant", "content": "No. Bad answer, long answer, wrong answer."}])
            for i in range(n)]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_same(model: torch.nn.Module, before: dict[str, torch.Tensor], only: set[str] | None = None) -> None:
    for name, p in model.named_parameters():
        if only is None or name in only:
            assert torch.equal(p, before[name]), name


@pytest.fixture
def models(tiny_model_dir: Path) -> Models:
    return load_models(ModelsConfig(sft=str(tiny_model_dir)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"beta": 0}, "β must be > 0"),
    ({"beta": float("nan")}, "β must be > 0"),
    ({"lr": -1e-4}, "learning rate must be > 0"),
    ({"steps": 0}, r"steps must be 1\.\.10000"),
    ({"steps": 1_000_000}, r"steps must be 1\.\.10000"),
    ({"steps": 3, "epochs": 1.0}, "not both"),
    ({"epochs": 0.0}, r"epochs must be in \(0, 100\]"),
    ({"epochs": 1e9}, r"epochs must be in \(0, 100\]"),
    ({"batch_size": 0}, "batch size must be ≥ 1"),
    ({"loss": "dpo"}, "loss must be one of"),
    ({"loss": "robust", "label_smoothing": 0.5}, r"ε must be in \[0, 0.5\)"),
    ({"label_smoothing": 0.1}, "robust loss only"),
    ({"heldout": 1.0}, "held-out fraction"),
    ({"max_length": 4}, "max length"),
    ({"lora": LoraSettings(r=0)}, "LoRA r"),
    ({"loss": "simpo", "simpo_gamma": -1.0}, "SimPO gamma must be ≥ 0"),
    ({"simpo_gamma": 1.0}, "SimPO gamma applies to the simpo loss only"),
    ({"loss": "orpo", "orpo_lambda": 0.0}, "ORPO lambda must be > 0"),
    ({"orpo_lambda": 0.5}, "ORPO lambda applies to the orpo loss only"),
    ({"loss": "kto", "kto_undesirable_weight": float("inf")}, "KTO desirable and undesirable weights must be > 0"),
    ({"loss": "orpo", "kto_desirable_weight": 2.0}, "KTO weights apply to the kto loss only"),
    ({"loss": "kto", "batch_size": 1}, "KTO needs a batch size ≥ 2"),
])
def test_config_validation(changes: dict, message: str) -> None:
    with pytest.raises(PlaygroundError, match=message):
        DPOConfig(**changes).validate()


def test_config_lists_every_problem_at_once() -> None:
    with pytest.raises(PlaygroundError) as info:
        DPOConfig(beta=0, simpo_gamma=2.0, orpo_lambda=-1.0, loss="kto", batch_size=1).validate()
    assert str(info.value).count(";") == 4  # beta, gamma (not simpo), lambda (≤ 0 and not orpo), KTO batch


def test_config_defaults_and_step_count() -> None:
    cfg = DPOConfig().validate()
    assert cfg.total_steps(10) == 9  # 3 epochs of ⌈10/4⌉ batches
    assert DPOConfig(epochs=0.5).total_steps(10) == 2
    assert DPOConfig(steps=7).total_steps(10) == 7
    assert [heldout_count(n, 0.2) for n in (2, 4, 5, 10, 100)] == [0, 0, 1, 2, 20]
    assert heldout_count(5, 0.9) == 3  # at least two pairs stay in training
    assert heldout_count(50, 0.0) == 0


def test_tree_packed_pair_logps_equal_separate_rows(models: Models) -> None:
    """One shared-prompt row per pair gives the log-probs of two separate rows, both layouts."""
    g = torch.Generator().manual_seed(0)
    for name, p in models.policy.model.named_parameters():
        if "lora_B" in name:
            p.data = (torch.randn(p.shape, generator=g) * 0.3).to(p.device, p.dtype)
    rows = separable_pairs(3)
    pairs, _ = encode_pairs(models.tokenizer, rows, max_length=1024)
    # Truncation that cuts chosen's and rejected's prompts differently: laid out side by side.
    long = PreferenceRow(rows[0].prompt, [{"role": "assistant", "content": "Hello! How are you today? " * 3}],
                         [{"role": "assistant", "content": "Yes."}])
    chosen, rejected = encode(models.tokenizer, long.prompt, [long.chosen, long.rejected], max_length=40)
    assert chosen.prompt_ids != rejected.prompt_ids
    pairs.append(EncodedPair(3, chosen, rejected))
    pad = models.tokenizer.pad_token_id
    with torch.no_grad(), models.policy.active() as model:
        packed = pair_logps(model, pairs, pad, models.device)
        rows_flat = [e for p in pairs for e in (p.chosen, p.rejected)]
        separate = torch.stack([t.sum() for t in completion_token_logps(model, rows_flat, pad, models.device)])
    torch.testing.assert_close(packed.flatten(), separate, atol=1e-4, rtol=1e-5)


def test_loss_decreases_and_only_the_adapter_changes(models: Models, tmp_path: Path) -> None:
    served = models.policy.model
    before = snapshot(served)
    lora_names = set(adapter_params(served))
    seen: list[tuple[int, int, dict]] = []
    result = train_dpo(models, separable_pairs(), DPOConfig(steps=12, **FAST), tmp_path,
                       callback=lambda step, total, metrics: seen.append((step, total, metrics)))
    assert [s for s, _, _ in seen] == list(range(1, 13)) and {t for _, t, _ in seen} == {12}
    losses = [m["loss"] for _, _, m in seen]
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: a fresh adapter equals the reference
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05
    assert seen[-1][2]["rewards/margins"] > 0 and seen[-1][2]["rewards/accuracies"] == 1.0
    for key in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "grad_norm", "seconds",
                "learning_rate", "epoch"):
        assert key in seen[0][2]
    assert result.heldout_pairs == 2 and result.train_pairs == 8
    assert result.heldout_before.accuracy == 0.5 and result.heldout_before.margin == 0.0
    assert result.heldout_after.accuracy == 1.0 and result.heldout_after.margin > 0
    assert_same(served, before, only=set(before) - lora_names)  # base weights bit-identical
    assert any(not torch.equal(p, before[n]) for n, p in adapter_params(served).items())  # published
    assert not any(p.requires_grad for p in served.parameters())
    assert models.policy.source == str(result.checkpoint)
    assert models.policy.ident.endswith(result.checkpoint.name)


def test_served_policy_untouched_until_published_under_the_lock(models: Models, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Generation holds `models.lock` for a whole `generate`: while training runs the served adapter
    never changes, and the new weights go in only once the lock is free."""
    before = snapshot(models.policy.model)
    locked, release, publishing = threading.Event(), threading.Event(), threading.Event()
    untouched: list[bool] = []
    real_publish = checkpoints.set_policy_weights

    def publish(*args, **kwargs) -> None:
        publishing.set()  # training is done and about to take the lock the "generation" holds
        real_publish(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "set_policy_weights", publish)

    def hold_lock() -> None:
        with models.lock:
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)

    def on_step(step: int, total: int, metrics: dict) -> None:
        untouched.append(all(torch.equal(p, before[n]) for n, p in models.policy.model.named_parameters()))
        if step == total:  # a "generation" takes the lock just before training publishes
            holder.start()
            locked.wait(30)

    results = []
    trainer = threading.Thread(target=lambda: results.append(
        train_dpo(models, separable_pairs(), DPOConfig(steps=4, **FAST), tmp_path, callback=on_step)))
    trainer.start()
    assert locked.wait(60) and publishing.wait(60)
    assert trainer.is_alive() and not results  # waiting for the lock to publish
    assert_same(models.policy.model, before)
    release.set()
    trainer.join(60)
    holder.join(60)
    assert untouched == [True] * 4 and results and results[0].checkpoint is not None
    assert any(not torch.equal(p, before[n]) for n, p in adapter_params(models.policy.model).items())


@pytest.mark.parametrize("loss", ["ipo", "hinge", "robust"])
def test_other_losses_learn(models: Models, tmp_path: Path, loss: str) -> None:
    cfg = DPOConfig(steps=6, loss=loss, label_smoothing=0.1 if loss == "robust" else 0.0, heldout=0, **FAST)
    result = train_dpo(models, separable_pairs(6), cfg, tmp_path)
    assert result.steps[-1]["rewards/margins"] > result.steps[0]["rewards/margins"]


def test_nan_loss_abandons_and_leaves_policy_bit_identical(models: Models, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = dpo.pair_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        return losses * float("nan") if calls["n"] == 3 else losses

    monkeypatch.setattr(dpo, "pair_losses", poisoned)
    before = snapshot(models.policy.model)
    source, ident = models.policy.source, models.policy.ident
    with pytest.raises(PlaygroundError, match=r"abandoned after 2 of 5 steps: the loss is nan.*nothing was written"):
        train_dpo(models, separable_pairs(), DPOConfig(steps=5, **FAST), tmp_path / "out")
    assert_same(models.policy.model, before)
    assert (models.policy.source, models.policy.ident) == (source, ident)
    assert not (tmp_path / "out").exists()


def test_exception_in_callback_abandons(models: Models, tmp_path: Path) -> None:
    before = snapshot(models.policy.model)

    def explode(step: int, total: int, metrics: dict) -> None:
        if step == 2:
            raise RuntimeError("the UI went away")

    with pytest.raises(PlaygroundError, match="RuntimeError: the UI went away"):
        train_dpo(models, separable_pairs(), DPOConfig(steps=4, **FAST), tmp_path / "out", callback=explode)
    assert_same(models.policy.model, before)
    assert not (tmp_path / "out").exists()


def test_unwritable_checkpoint_folder_abandons(models: Models, tmp_path: Path) -> None:
    before = snapshot(models.policy.model)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PlaygroundError, match="abandoned after 2 of 2 steps: cannot create a checkpoint in"):
        train_dpo(models, separable_pairs(), DPOConfig(steps=2, **FAST), blocker / "ckpts")
    assert_same(models.policy.model, before)


def test_cancel_writes_nothing(models: Models, tmp_path: Path) -> None:
    before = snapshot(models.policy.model)
    steps: list[int] = []
    result = train_dpo(models, separable_pairs(), DPOConfig(steps=10, **FAST), tmp_path / "out",
                       callback=lambda step, total, metrics: steps.append(step), should_stop=lambda: len(steps) >= 2)
    assert result.cancelled and result.checkpoint is None and len(result.steps) == 2
    assert_same(models.policy.model, before)
    assert not (tmp_path / "out").exists()


def test_refusals(models: Models, tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PlaygroundError, match="at least 2 usable pairs, got 1 of 1"):
        train_dpo(models, separable_pairs(1), DPOConfig(), tmp_path)
    same = PreferenceRow("Hi", "Hello.", "Hello.")
    with pytest.raises(PlaygroundError, match=r"got 1 of 2 \(1 skipped"):
        train_dpo(models, [same, *separable_pairs(1)], DPOConfig(), tmp_path)
    with pytest.raises(PlaygroundError, match=r"LoRA r=16, alpha=32.*asks for r=8"):
        train_dpo(models, separable_pairs(), DPOConfig(lora=LoraSettings(r=8, alpha=32)), tmp_path)
    full = load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(tiny_model_dir)))
    with pytest.raises(PlaygroundError, match="policy is a full model"):
        train_dpo(full, separable_pairs(), DPOConfig(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_separate_reference_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir), reference=str(tiny_model_dir)))
    result = train_dpo(models, separable_pairs(), DPOConfig(steps=4, **FAST), tmp_path)
    assert result.steps[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert result.steps[-1]["rewards/margins"] > 0


def test_checkpoint_record_and_reload(models: Models, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = separable_pairs()
    result = train_dpo(models, rows, DPOConfig(steps=3, **FAST), tmp_path)
    ckpt = result.checkpoint
    assert ckpt.parent == tmp_path and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert {"adapter_model.safetensors", "adapter_config.json", "record.json"} <= {p.name for p in ckpt.iterdir()}
    record = json.loads((ckpt / "record.json").read_text())
    assert {"format", "id", "created", "parent", "base_model", "reference", "pairs", "hyperparameters", "steps",
            "heldout", "seconds", "device", "dtype", "versions"} <= set(record)
    assert record["id"] == ckpt.name and record["parent"] is None
    assert record["pairs"]["sha256"] == pairs_sha256(rows) and record["pairs"]["count"] == 10
    assert record["hyperparameters"]["beta"] == 0.1 and record["hyperparameters"]["lora"]["r"] == 16
    assert len(record["steps"]) == 3 and record["heldout"]["after"]["pairs"] == 2
    assert record["base_model"]["source"] == str(tiny_model_dir)

    pairs, _ = encode_pairs(models.tokenizer, rows, 1024)
    pad = models.tokenizer.pad_token_id
    with torch.no_grad(), models.policy.active() as model:
        trained = pair_logps(model, pairs, pad, models.device)
    reloaded = load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(ckpt)))
    with torch.no_grad(), reloaded.policy.active() as model:
        again = pair_logps(model, pairs, pad, reloaded.device)
    torch.testing.assert_close(again, trained, atol=1e-5, rtol=0)

    second = train_dpo(reloaded, rows, DPOConfig(steps=1, **FAST), tmp_path)
    parent = json.loads((second.checkpoint / "record.json").read_text())["parent"]
    assert parent == {"path": str(ckpt), "id": ckpt.name}


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train_main(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_trains_and_summarises(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r.as_trl()) + "\n" for r in separable_pairs()))
    code, out, err = cli(["--pairs", str(data), "--out", str(tmp_path / "ckpts"), "--sft", str(tiny_model_dir),
                          "--steps", "3", "--lr", "5e-3", "--lora-r", "8"], capsys)
    assert code == 0, err
    assert "training" in err  # the progress bar
    assert "held out    accuracy 0.50 →" in out
    ckpt = Path(out.strip().splitlines()[-1].split()[-1])
    assert ckpt.parent == tmp_path / "ckpts" and (ckpt / "adapter_model.safetensors").is_file()
    hyper = json.loads((ckpt / "record.json").read_text())["hyperparameters"]
    assert (hyper["lora"]["r"], hyper["lora"]["alpha"], hyper["steps"]) == (8, 16, 3)

    # Training on from that checkpoint takes its LoRA settings without flags.
    code, out, err = cli(["--pairs", str(data), "--out", str(tmp_path / "ckpts"), "--sft", str(tiny_model_dir),
                          "--policy", str(ckpt), "--steps", "1"], capsys)
    assert code == 0, err


@pytest.mark.parametrize(("flags", "message"), [
    (["--beta", "0"], "error: β must be > 0"),
    (["--loss", "robust", "--label-smoothing", "0.7"], "error: label smoothing ε must be in [0, 0.5)"),
    (["--pairs", "missing.jsonl"], "error: missing.jsonl: no such file"),
    (["--out", "pairs.jsonl"], "error: --out pairs.jsonl: exists and is not a folder"),
])
def test_cli_bad_input_is_one_line_and_exit_1(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch, flags: list[str], message: str) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r.as_trl()) + "\n" for r in separable_pairs()))
    argv = ["--pairs", str(data), "--out", str(tmp_path / "ckpts"), "--sft", str(tiny_model_dir), *flags]
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(argv, capsys)
    assert code == 1
    assert err.strip() == message
    assert not (tmp_path / "ckpts").exists()


def test_cli_defaults_are_the_config_defaults() -> None:
    # The CLI writes DPOConfig's defaults out (it imports the engine only after deciding hub access).
    args, cfg = train_args(["--pairs", "p.jsonl", "--out", "ckpts"]), DPOConfig()
    assert (args.lr, args.batch_size, args.heldout, args.max_length, args.seed, args.beta, args.loss,
            args.label_smoothing, args.max_grad_norm, args.steps, args.epochs, args.simpo_gamma, args.orpo_lambda,
            args.kto_desirable_weight, args.kto_undesirable_weight) == (
        cfg.lr, cfg.batch_size, cfg.heldout, cfg.max_length, cfg.seed, cfg.beta, cfg.loss,
        cfg.label_smoothing, cfg.max_grad_norm, cfg.steps, cfg.epochs, cfg.simpo_gamma, cfg.orpo_lambda,
        cfg.kto_desirable_weight, cfg.kto_undesirable_weight)
    for loss in LOSSES:  # every objective the engine has is offered
        assert train_args(["--pairs", "p.jsonl", "--out", "ckpts", "--loss", loss]).loss == loss
