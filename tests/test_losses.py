"""KTO, SimPO and ORPO beside DPO on the tiny random Llama: per-batch numbers against TRL 1.16's
KTOTrainer and experimental ORPOTrainer (fp32, test-only TRL), SimPO against its paper's formula,
learning, reference-free runs, unpaired rows, safety and the CLI."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch

import playground.training.dpo as dpo
from playground.core.errors import PlaygroundError
from playground.data.rows import PreferenceRow, UnpairedRow, load_unpaired
from playground.models.roles import Models, ModelsConfig, load_models
from playground.scoring.pairs import encode_pairs
from playground.scoring.scorer import completion_token_logps
from playground.training.dpo import (
    DPOConfig,
    batch_schedule,
    encode_completions,
    kto_pairs,
    kto_step,
    pair_step,
    train_dpo,
)
from tests.test_dpo import FAST, assert_same, cli, separable_pairs, snapshot

TOL = 1e-3
STRING_ROWS = [
    {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Berlin, obviously."},
    {"prompt": "Q: What is 2 + 2?\nA:", "chosen": " 4", "rejected": " It is five, or maybe six."},
    {"prompt": "Write a haiku about rain.\n", "chosen": "Soft rain on the roof\nwhispers to the sleeping town\n",
     "rejected": "Rain."},
]
UNPAIRED_CHAT = [
    {"prompt": [{"role": "user", "content": "Say hi."}],
     "completion": [{"role": "assistant", "content": "Hi! How can I help you today?"}], "label": True},
    {"prompt": [{"role": "user", "content": "Capital of Italy?"}],
     "completion": [{"role": "assistant", "content": "Milan, a lovely city."}], "label": False},
    {"prompt": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Two plus two?"}],
     "completion": [{"role": "assistant", "content": "4."}], "label": True},
    {"prompt": [{"role": "user", "content": "Name a colour."}],
     "completion": [{"role": "assistant", "content": "No."}], "label": False},
    {"prompt": [{"role": "user", "content": "Good answer?"}],
     "completion": [{"role": "assistant", "content": "Yes, good answer."}], "label": True},
]


@pytest.fixture
def models(tiny_model_dir: Path) -> Models:
    torch.manual_seed(0)  # the fresh adapter's lora_A is drawn from the global RNG, which earlier tests move
    return load_models(ModelsConfig(sft=str(tiny_model_dir)))


@pytest.fixture
def perturbed(models: Models) -> Models:
    """The policy's adapter moved away from zero, so policy and reference differ."""
    g = torch.Generator().manual_seed(0)
    for name, p in models.policy.model.named_parameters():
        if "lora_B" in name:
            p.data = (torch.randn(p.shape, generator=g) * 0.3).to(p.device, p.dtype)
    return models


def trl_models(models: Models) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(policy with the adapter folded in, the same base without it) as plain models for TRL."""
    return copy.deepcopy(models.policy.model).merge_and_unload(), copy.deepcopy(models.policy.model).unload()


# --- TRL agreement ------------------------------------------------------------------------------

# A random adapter makes mismatched answers less likely than the base model does (z₀ clamped to 0);
# swapping the roles, the base as policy and the perturbed model as reference, makes z₀ > 0.
@pytest.mark.parametrize(("weights", "swap"), [((1.0, 1.0), False), ((1.5, 0.7), True)],
                         ids=["z0-clamped", "z0-positive-weighted"])
def test_kto_batch_matches_trl(perturbed: Models, tmp_path: Path, weights: tuple[float, float], swap: bool) -> None:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    models = perturbed
    policy, reference = trl_models(models)
    if swap:
        policy, reference = reference, policy
    args = KTOConfig(output_dir=str(tmp_path / "trl"), bf16=False, gradient_checkpointing=False, use_cpu=True,
                     per_device_train_batch_size=len(UNPAIRED_CHAT), beta=0.1, desirable_weight=weights[0],
                     undesirable_weight=weights[1], report_to="none", seed=0)
    trainer = KTOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(UNPAIRED_CHAT),
                         processing_class=models.tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        theirs_loss = float(trainer.compute_loss(trainer.model, batch))
    theirs = {k: v[-1] for k, v in trainer._metrics["eval"].items()}

    cfg = DPOConfig(loss="kto", kto_desirable_weight=weights[0], kto_undesirable_weight=weights[1])
    rows, skipped = encode_completions(models.tokenizer, [UnpairedRow(r["prompt"], r["completion"], r["label"])
                                                          for r in UNPAIRED_CHAT])
    assert skipped == 0 and [r.desirable for r in rows] == [r["label"] for r in UNPAIRED_CHAT]
    pad = models.tokenizer.pad_token_id
    with torch.no_grad(), models.policy.active() as model:
        if swap:
            ref = dpo.pair_logps(model, kto_pairs(rows, cfg.max_length), pad, models.device)
            with model.disable_adapter():
                loss, ours = kto_step(model, rows, ref, cfg, pad, models.device)
        else:
            with model.disable_adapter():
                ref = dpo.pair_logps(model, kto_pairs(rows, cfg.max_length), pad, models.device)
            loss, ours = kto_step(model, rows, ref, cfg, pad, models.device)
    assert float(loss) == pytest.approx(theirs_loss, abs=TOL)
    for key in ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert ours[key] == pytest.approx(theirs[key], abs=TOL), key
    assert (ours["desirable"], ours["undesirable"]) == (3, 2)
    # The perturbation is visible, or agreement would be trivial.
    assert abs(ours["rewards/chosen"]) > 0.01 and abs(ours["rewards/rejected"]) > 0.01
    assert ours["kl"] > 0.1 if swap else ours["kl"] == 0.0


def test_orpo_batch_matches_trl(perturbed: Models, tmp_path: Path) -> None:
    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    models = perturbed
    policy, _ = trl_models(models)
    # TRL's ORPO prepends the BOS token to a plain-text prompt where DPO and KTO do not; without a
    # BOS token both sides score the very same token ids.
    tokenizer = copy.deepcopy(models.tokenizer)
    tokenizer.bos_token = None
    args = ORPOConfig(output_dir=str(tmp_path / "trl"), bf16=False, gradient_checkpointing=False, use_cpu=True,
                      per_device_train_batch_size=len(STRING_ROWS), beta=0.25, report_to="none", seed=0,
                      max_length=1024)
    trainer = ORPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(STRING_ROWS),
                          processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        theirs_loss, theirs = trainer.get_batch_loss_metrics(trainer.model, batch, "train")

    cfg = DPOConfig(loss="orpo", orpo_lambda=0.25)
    pairs, _ = encode_pairs(models.tokenizer, [PreferenceRow(**r) for r in STRING_ROWS], cfg.max_length)
    pad = models.tokenizer.pad_token_id
    with torch.no_grad(), models.policy.active() as model:
        loss, ours = pair_step(model, pairs, None, cfg, pad, models.device)
    assert float(loss) == pytest.approx(float(theirs_loss), abs=TOL)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "nll_loss", "log_odds_ratio",
                "log_odds_chosen"):
        assert ours[key] == pytest.approx(theirs[key], abs=TOL), key


def test_simpo_batch_is_the_paper_formula(perturbed: Models) -> None:
    """−log σ(β/|y_w|·log π(y_w) − β/|y_l|·log π(y_l) − γ), by hand from separately scored rows."""
    models = perturbed
    cfg = DPOConfig(loss="simpo", beta=2.0, simpo_gamma=1.0)
    pairs, _ = encode_pairs(models.tokenizer, [PreferenceRow(**r) for r in STRING_ROWS], cfg.max_length)
    pad = models.tokenizer.pad_token_id
    with torch.no_grad(), models.policy.active() as model:
        loss, ours = pair_step(model, pairs, None, cfg, pad, models.device)
        rows = [e for p in pairs for e in (p.chosen, p.rejected)]
        tokens = completion_token_logps(model, rows, pad, models.device)
    by_hand, rewards = [], []
    for chosen, rejected in zip(tokens[::2], tokens[1::2], strict=True):
        r_w, r_l = 2.0 * float(chosen.sum()) / len(chosen), 2.0 * float(rejected.sum()) / len(rejected)
        by_hand.append(-math.log(1 / (1 + math.exp(-(r_w - r_l - 1.0)))))
        rewards.append((r_w, r_l))
    assert float(loss) == pytest.approx(sum(by_hand) / len(by_hand), abs=1e-4)
    assert ours["rewards/chosen"] == pytest.approx(sum(w for w, _ in rewards) / 3, abs=1e-4)
    assert ours["rewards/margins"] == pytest.approx(sum(w - lo for w, lo in rewards) / 3, abs=1e-4)


# --- the pieces ---------------------------------------------------------------------------------

def test_kto_mismatched_pairs_rotate_by_one(models: Models) -> None:
    rows, _ = encode_completions(models.tokenizer, [UnpairedRow(r["prompt"], r["completion"], r["label"])
                                                    for r in UNPAIRED_CHAT[:3]])
    pairs = kto_pairs(rows, 1024)
    assert [p.chosen.completion_ids for p in pairs] == [r.completion_ids for r in rows]
    assert [p.rejected.completion_ids for p in pairs] == [rows[2].completion_ids, rows[0].completion_ids,
                                                          rows[1].completion_ids]
    assert all(p.shares_prompt for p in pairs)
    short = kto_pairs(rows, 12)  # each row cut to max_length on its own
    assert all(len(p.chosen.input_ids) <= 12 and len(p.rejected.input_ids) <= 12 for p in short)


def test_kto_schedule_has_no_single_completion_step() -> None:
    lengths = list(range(9))  # 9 rows in batches of 4: a trailing batch of 1
    assert min(len(b) for b in batch_schedule(lengths, 4, 30, seed=0)) == 1
    schedule = batch_schedule(lengths, 4, 30, seed=0, min_batch=2)
    assert min(len(b) for b in schedule) >= 2
    assert sorted(i for b in schedule[:2] for i in b) == list(range(9))  # an epoch is still every row once


def test_load_unpaired_rows(tmp_path: Path) -> None:
    data = tmp_path / "unpaired.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in UNPAIRED_CHAT))
    loaded = load_unpaired(data)
    assert [r.label for r in loaded.rows] == [True, False, True, False, True] and loaded.lines == [1, 2, 3, 4, 5]
    assert [r.as_trl() for r in loaded.rows] == UNPAIRED_CHAT
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(UNPAIRED_CHAT[0]) + "\n" + json.dumps({"prompt": "Hi", "completion": "Yo", "label": 1})
                   + "\n" + json.dumps({"prompt": "Hi", "label": False}) + "\n")
    with pytest.raises(PlaygroundError, match=r"2 invalid row\(s\), nothing was read:\n  line 2: 'label' must be true"
                                              r" \(desirable\) or false \(undesirable\), got 1\n  line 3: missing "
                                              r"'completion'"):
        load_unpaired(bad)
    assert len(load_unpaired(bad, skip_invalid=True).rows) == 1
    csv = tmp_path / "unpaired.csv"
    csv.write_text("prompt,completion,label\nHi,Hello.,true\nHi,Go away.,False\n")
    assert [(r.completion, r.label) for r in load_unpaired(csv).rows] == [("Hello.", True), ("Go away.", False)]


# --- training -----------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["kto", "simpo", "orpo"])
def test_each_loss_raises_its_heldout_metric(models: Models, tmp_path: Path, loss: str) -> None:
    """KTO raises held-out implicit-reward accuracy; SimPO and ORPO the held-out log-prob margin."""
    settings = {"simpo": {"beta": 2.0}}.get(loss, {})
    result = train_dpo(models, separable_pairs(12), DPOConfig(steps=12, loss=loss, **FAST, **settings), tmp_path)
    assert result.heldout_pairs == 2 and result.train_pairs == 10
    assert result.heldout_before.accuracy == 0.5  # a fresh adapter is the reference: exact ties
    if loss == "kto":
        assert result.heldout_after.accuracy == 1.0 and result.heldout_after.margin > 0.1
        assert result.total_steps == 12 and {m["desirable"] + m["undesirable"] for m in result.steps} <= {4, 5}
        assert sum(m["pairs"] for m in result.steps[:5]) == 20  # an epoch: both answers of 10 training pairs
    else:
        before, after = result.heldout_logps_before, result.heldout_logps_after
        assert after.accuracy == 1.0 and after.margin > before.margin + 1.0
        assert result.reference_free
    assert result.steps[-1]["loss"] < result.steps[0]["loss"]
    record = json.loads((result.checkpoint / "record.json").read_text())
    assert record["reference_free"] is (loss != "kto") and record["hyperparameters"]["loss"] == loss
    assert record["heldout_logps"]["after"]["pairs"] == 2 and record["heldout"]["after"]["pairs"] == 2


def test_reference_free_losses_skip_the_training_reference_pass(models: Models, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    scored: list[int] = []
    real = dpo.all_pair_logps

    def counting(model, pairs, *args, **kwargs):
        scored.append(len(pairs))
        return real(model, pairs, *args, **kwargs)

    monkeypatch.setattr(dpo, "all_pair_logps", counting)
    train_dpo(models, separable_pairs(10), DPOConfig(steps=2, loss="simpo", **FAST), tmp_path)
    assert scored == [2, 2, 2]  # the reference, then the policy before and after, on the 2 held-out pairs only
    scored.clear()
    train_dpo(models, separable_pairs(10), DPOConfig(steps=2, **FAST), tmp_path)
    assert scored == [8, 2, 2, 2]  # DPO: the 8 training pairs' reference pass first


def test_kto_trains_on_unpaired_rows_alone_and_beside_pairs(models: Models, tmp_path: Path) -> None:
    thumbs = [UnpairedRow([{"role": "user", "content": f"Question {i}?"}],
                          [{"role": "assistant", "content": "Yes, good answer." if i % 2 else "No. Bad answer."}],
                          bool(i % 2)) for i in range(8)]
    alone = train_dpo(models, [], DPOConfig(steps=4, loss="kto", **FAST), tmp_path, unpaired=thumbs)
    assert (alone.pairs, alone.heldout_pairs, alone.unpaired, alone.heldout_before) == (0, 0, 8, None)
    assert sum(m["pairs"] for m in alone.steps[:2]) == 8
    both = train_dpo(models, separable_pairs(6), DPOConfig(epochs=1.0, loss="kto", **FAST), tmp_path,
                     unpaired=thumbs)
    # 6 pairs: 1 held out, 5 train → 10 answers + 8 unpaired rows = 18 completions, ⌈18/4⌉ = 5 steps
    assert both.train_pairs == 5 and both.total_steps == 5 and sum(m["pairs"] for m in both.steps) == 18
    record = json.loads((both.checkpoint / "record.json").read_text())
    assert record["unpaired"]["count"] == 8 and record["pairs"]["count"] == 6
    with pytest.raises(PlaygroundError, match="KTO needs at least 2 usable completions, got 1"):
        train_dpo(models, [], DPOConfig(loss="kto"), tmp_path, unpaired=thumbs[:1])
    with pytest.raises(PlaygroundError, match=r"8 unpaired rows .* train only with the kto loss, not sigmoid"):
        train_dpo(models, separable_pairs(), DPOConfig(), tmp_path, unpaired=thumbs)


@pytest.mark.parametrize("loss", ["kto", "orpo"])
def test_nan_abandons_and_leaves_policy_bit_identical(models: Models, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, loss: str) -> None:
    name = {"kto": "kto_loss", "orpo": "orpo_loss"}[loss]
    real = getattr(dpo, name)
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(dpo, name, poisoned)
    before = snapshot(models.policy.model)
    source = models.policy.source
    with pytest.raises(PlaygroundError, match=r"abandoned after 2 of 5 steps: the loss is nan.*nothing was written"):
        train_dpo(models, separable_pairs(), DPOConfig(steps=5, loss=loss, **FAST), tmp_path / "out")
    assert_same(models.policy.model, before)
    assert models.policy.source == source and not (tmp_path / "out").exists()


def test_kto_cancel_writes_nothing(models: Models, tmp_path: Path) -> None:
    before = snapshot(models.policy.model)
    seen: list[int] = []
    result = train_dpo(models, separable_pairs(), DPOConfig(steps=6, loss="kto", **FAST), tmp_path / "out",
                       callback=lambda step, total, m: seen.append(step), should_stop=lambda: len(seen) >= 2)
    assert result.cancelled and result.checkpoint is None and len(result.steps) == 2
    assert_same(models.policy.model, before)
    assert not (tmp_path / "out").exists()


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_kto_reads_unpaired_files(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pairs, unpaired = tmp_path / "pairs.jsonl", tmp_path / "unpaired.jsonl"
    pairs.write_text("".join(json.dumps(r.as_trl()) + "\n" for r in separable_pairs(6)))
    unpaired.write_text("".join(json.dumps(r) + "\n" for r in UNPAIRED_CHAT))
    base = ["--out", str(tmp_path / "ckpts"), "--sft", str(tiny_model_dir), "--steps", "2", "--loss", "kto"]
    code, out, err = cli(["--pairs", str(pairs), "--unpaired", str(unpaired), *base], capsys)
    assert code == 0, err
    assert "unpaired    5 rows beside the pairs' answers" in out and "log-prob    held-out margin" in out
    code, out, err = cli(["--pairs", str(unpaired), *base, "--kto-undesirable-weight", "1.2"], capsys)  # alone
    assert code == 0, err
    record = json.loads((Path(out.strip().splitlines()[-1].split()[-1]) / "record.json").read_text())
    assert (record["pairs"]["count"], record["unpaired"]["count"]) == (0, 5)
    assert record["hyperparameters"]["kto_undesirable_weight"] == 1.2


@pytest.mark.parametrize(("flags", "message"), [
    (["--unpaired", "unpaired.jsonl"], "error: --unpaired rows train only with --loss kto, not sigmoid"),
    (["--loss", "simpo", "--pairs", "unpaired.jsonl"],
     "error: unpaired.jsonl: unpaired rows (prompt, completion, label) train only with --loss kto"),
    (["--loss", "kto", "--batch-size", "1"],
     "error: KTO needs a batch size ≥ 2 (its reference point comes from mismatched pairs within a step)"),
    (["--orpo-lambda", "0.5"], "error: ORPO lambda applies to the orpo loss only"),
])
def test_cli_refusals(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                      monkeypatch: pytest.MonkeyPatch, flags: list[str], message: str) -> None:
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r.as_trl()) + "\n" for r in separable_pairs()))
    (tmp_path / "unpaired.jsonl").write_text("".join(json.dumps(r) + "\n" for r in UNPAIRED_CHAT))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["--pairs", "pairs.jsonl", "--out", "ckpts", "--sft", str(tiny_model_dir), *flags], capsys)
    assert (code, err.strip()) == (1, message)
    assert not (tmp_path / "ckpts").exists()
