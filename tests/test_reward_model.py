"""Bradley–Terry reward model on the tiny random Llama: config, learning, pooling, save/load, failures, CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

import playground.training.reward_model as rm
from cli import reward_model as rm_cli
from cli.common import run_cli
from playground.core.errors import PlaygroundError
from playground.data.rows import PreferenceRow
from playground.scoring.encoding import Encoded, encode
from playground.training.reward_model import (
    RECORD,
    WEIGHTS,
    RewardConfig,
    RewardModel,
    RewardTrainResult,
    last_token_rewards,
    load_reward_model,
    train_reward_model,
)

QUESTIONS = ["Say hi.", "Two plus two?", "The capital of France?", "Write a poem.", "Numbers please.",
             "Yes or no?", "Good answer?", "Short answer?", "The sea?", "Hello?"]
SHORT = ["Yes.", "No.", "Paris.", "Four.", "Hi!"]
LONG = ["Well, the answer is long: the capital of France is Paris and the capital of Germany is Berlin.",
        "Numbers: 0 1 2 3 4 5 6 7 8 9, and two plus two is four. I am fine, thank you.",
        "A short poem about the sea, the wind and the sky, a long answer and a bad answer."]
CPU = torch.device("cpu")
FAST = 5e-3  # a bigger step than the default, so the rewards the pooling tests compare are far from 0


def short_vs_long(n: int = 20) -> list[PreferenceRow]:
    """Chosen always a short answer, rejected always a long one; held-out pairs pair them anew."""
    return [PreferenceRow([{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}],
                          [{"role": "assistant", "content": SHORT[i % len(SHORT)]}],
                          [{"role": "assistant", "content": LONG[i % len(LONG)]}])
            for i in range(n)]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> RewardModel:
    result = train_reward_model(tiny_model_dir, tokenizer, short_vs_long(), RewardConfig(lr=FAST, steps=10),
                                device="cpu")
    assert result.model is not None
    return result.model


def test_config_lists_every_bad_setting() -> None:
    bad = RewardConfig(lr=float("inf"), steps=0, batch_size=0, max_length=4, heldout=1.0, max_grad_norm=0.0)
    with pytest.raises(PlaygroundError) as err:
        bad.validate()
    # The wording is DPOConfig's (RewardConfig.validate delegates to it); one problem per bad setting.
    problems = str(err.value).split("; ")
    for start in ("learning rate must be > 0", "steps must be", "batch size must be ≥ 1", "max length must be ≥ 8",
                  "held-out fraction must be in [0, 1)", "max grad norm must be > 0"):
        assert any(p.startswith(start) for p in problems), start
    assert len(problems) == 6
    with pytest.raises(PlaygroundError, match="not both"):
        RewardConfig(steps=3, epochs=1.0).validate()
    assert RewardConfig().validate() == RewardConfig()


def test_default_settings_learn_short_over_long(tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    steps: list[int] = []
    result = train_reward_model(tiny_model_dir, tokenizer, short_vs_long(), RewardConfig(steps=12), device="cpu",
                                callback=lambda step, total, metrics: steps.append(step))
    assert (result.train_pairs, result.heldout_pairs, result.total_steps) == (16, 4, 12)
    assert steps == list(range(1, 13))
    assert result.heldout_before is not None and result.heldout_after is not None
    # w = 0 and LoRA B = 0 at the start: every reward is 0, so every held-out pair is a tie (½).
    assert (result.heldout_before.accuracy, result.heldout_before.margin) == (0.5, 0.0)
    assert result.heldout_after.accuracy >= 0.8
    assert result.heldout_after.margin > 0
    assert result.steps[0]["accuracy"] == 0.5
    assert all(m["accuracy"] == 1.0 for m in result.steps[-3:])
    assert result.steps[-1]["loss"] < result.steps[0]["loss"]
    assert set(result.steps[0]) >= {"loss", "accuracy", "margin", "rewards/chosen", "rewards/rejected", "grad_norm"}


def test_score_ignores_batch_composition(trained: RewardModel) -> None:
    prompt = user("Say hi. (99)")
    alone = trained.score([prompt], ["Hi!"])
    batched = trained.score([user("Two plus two? (98)"), prompt, prompt],
                            [LONG[1] + " " + LONG[0], "Hi!", LONG[2]], batch_size=3)
    assert alone[0] == pytest.approx(batched[1], abs=1e-4)
    assert batched[1] > batched[2]  # the trained preference: short over long, on an unseen prompt
    # A message-list response is the same assistant turn as the plain string.
    assert trained.score([prompt], [[{"role": "assistant", "content": "Hi!"}]])[0] == pytest.approx(alone[0], abs=1e-6)


def test_score_shares_prompts_and_equals_whole_row_forwards(trained: RewardModel) -> None:
    """`score` computes each prompt once for its responses (`shared_prompt`); each reward equals a
    forward over the whole row alone."""
    prompts = [user("Say hi. (97)"), user("Name a colour, please. (96)")]
    responses = ["Hi!", LONG[0], "Red.", LONG[1] + " " + LONG[2], "Blue."]
    which = [0, 0, 1, 1, 1]
    shared = trained.score([prompts[i] for i in which], responses, batch_size=5)
    rows = [encode(trained.tokenizer, prompts[i], [[{"role": "assistant", "content": r}]], trained.config.max_length)[0]
            for i, r in zip(which, responses, strict=True)]
    with torch.no_grad():  # each row alone, whole, through the plain decoder
        whole = [float(trained.head(trained.decoder(input_ids=torch.tensor([r.input_ids])).last_hidden_state[0, -1]))
                 for r in rows]
    assert shared == pytest.approx(whole, abs=1e-5)
    assert max(whole) - min(whole) > 1e-3  # distinct rewards, so a mix-up of rows would show


def test_pooling_reads_the_last_real_token(trained: RewardModel, tokenizer: PreTrainedTokenizerBase) -> None:
    short, long = (encode(tokenizer, user("Say hi."), [[{"role": "assistant", "content": text}]])[0]
                   for text in ("Hi!", LONG[0]))
    assert len(short.input_ids) < len(long.input_ids)  # so `short` is padded in the batch below

    def rewards(rows: list[Encoded], pad_id: int) -> torch.Tensor:
        with torch.no_grad():
            return last_token_rewards(trained.decoder, trained.head, rows, pad_id, CPU)

    other_pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    base = rewards([short, long], tokenizer.pad_token_id)
    assert base[0] != 0 and base[0] != base[1]
    # What lies after a row's end (the padding) does not reach its score ...
    assert torch.allclose(rewards([short, long], other_pad), base, atol=1e-6)
    assert rewards([short], tokenizer.pad_token_id)[0] == pytest.approx(float(base[0]), abs=1e-4)
    # ... its last real token does.
    last = short.completion_ids[-1]
    changed = Encoded(short.prompt_ids, (*short.completion_ids[:-1], other_pad if last != other_pad else 0))
    assert abs(float(rewards([changed, long], tokenizer.pad_token_id)[0] - base[0])) > 1e-3


def test_plain_text_rows_pool_at_eos_although_it_is_the_pad_token(trained: RewardModel,
                                                                  tokenizer: PreTrainedTokenizerBase) -> None:
    """SmolLM2's EOS is its pad token; pooling at "the last token that is not pad" (transformers'
    sequence classifiers) would read the token before EOS and not see EOS at all."""
    row = encode(tokenizer, "Say hi.", ["Hi!"])[0]
    assert row.completion_ids[-1] == tokenizer.eos_token_id == tokenizer.pad_token_id
    without_eos = Encoded(row.prompt_ids, row.completion_ids[:-1])
    with torch.no_grad():
        with_eos, before_eos = trained.rewards([row, without_eos])
    assert abs(float(with_eos - before_eos)) > 1e-3


def test_save_load_round_trip(trained: RewardModel, tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = trained.save(tmp_path / "rm")
    assert sorted(p.name for p in folder.iterdir()) == [RECORD, WEIGHTS]  # no .bin/.pt, no pickle
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary folder is gone
    record = json.loads((folder / RECORD).read_text())
    assert record["base_model"]["source"] == str(tiny_model_dir)
    assert record["heldout"]["after"]["accuracy"] == trained.record["heldout"]["after"]["accuracy"]
    assert record["config"]["lr"] == FAST

    loaded = load_reward_model(folder, device="cpu")  # base and tokenizer from the record
    prompts = [user("Say hi. (7)"), user("Numbers please. (8)"), "Plain text prompt."]
    responses = ["Hi!", LONG[1], "Yes."]
    assert loaded.score(prompts, responses) == pytest.approx(trained.score(prompts, responses), abs=1e-6)
    assert loaded.record["heldout"] == trained.record["heldout"]
    with pytest.raises(PlaygroundError, match="already exists"):
        loaded.save(folder)


def test_load_refuses_missing_or_corrupt_folders(trained: RewardModel, tmp_path: Path) -> None:
    with pytest.raises(PlaygroundError, match="no such reward-model folder"):
        load_reward_model(tmp_path / "nowhere", device="cpu")
    folder = trained.save(tmp_path / "rm")
    (folder / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(PlaygroundError, match=f"{WEIGHTS}: unreadable"):
        load_reward_model(folder, device="cpu")
    (folder / WEIGHTS).unlink()
    with pytest.raises(PlaygroundError, match=f"missing {WEIGHTS}"):
        load_reward_model(folder, device="cpu")


def test_nan_loss_writes_nothing(tiny_model_dir: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(rm, "dpo_loss", lambda chosen, rejected: (chosen - rejected) * float("nan"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p.as_trl()) + "\n" for p in short_vs_long(6)))
    out = tmp_path / "runs" / "rm"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: rm_cli.main(["--pairs", str(pairs), "--out", str(out), "--sft", str(tiny_model_dir),
                                 "--steps", "2", "--device", "cpu"]))
    assert exit_info.value.code == 1
    assert "abandoned after 0 of 2 steps: the loss is nan; nothing was written" in capsys.readouterr().err
    assert not out.exists()
    assert not (out.parent.exists() and list(out.parent.iterdir()))


def test_cancel_returns_no_model(tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    result: RewardTrainResult = train_reward_model(tiny_model_dir, tokenizer, short_vs_long(6),
                                                   RewardConfig(steps=3), should_stop=lambda: True, device="cpu")
    assert result.cancelled and result.model is None and result.steps == []


def test_cli_defaults_are_the_config_defaults() -> None:
    # The CLI writes RewardConfig's defaults out (it imports the engine only after deciding hub access).
    args, cfg = rm_cli.parse_args(["--pairs", "p.jsonl", "--out", "rm"]), RewardConfig()
    assert (args.lr, args.batch_size, args.heldout, args.max_length, args.seed, args.steps, args.epochs) == (
        cfg.lr, cfg.batch_size, cfg.heldout, cfg.max_length, cfg.seed, cfg.steps, cfg.epochs)


@pytest.mark.slow
@pytest.mark.parametrize(("command", "flag"), [("reward-model", "--pairs"), ("train", "--pairs"), ("serve", "--port"),
                                            ("rlhf", "--reward-model"), ("data", "COMMAND"), ("judge", "--judge"),
                                            ("score", "--pairs")])
def test_cli_help_imports_no_model_library(command: str, flag: str) -> None:
    # Hub access is decided from the flags before transformers is imported (it reads the switch once).
    code = (f"import sys\nfrom cli.main import main\ntry:\n    main(['{command}', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert flag in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"


def test_cli_trains_and_saves(tiny_model_dir: Path, tmp_path: Path, home: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p.as_trl()) + "\n" for p in short_vs_long(10)))
    out = tmp_path / "rm"
    assert rm_cli.main(["--pairs", str(pairs), "--out", str(out), "--sft", str(tiny_model_dir), "--steps", "6",
                    "--lr", str(FAST), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "held out    accuracy 0.50 → 1.00" in printed
    assert sorted(p.name for p in out.iterdir()) == [RECORD, WEIGHTS]
