"""Batched scoring on the tiny model: the TRL token convention, batching, the reference cache."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from playground.models.roles import Models, ModelsConfig, load_models
from playground.scoring.encoding import encode
from playground.scoring.scorer import Scorer, completion_token_logps
from tests.test_models import perturbed_policy

ROOT = Path(__file__).resolve().parents[1]
CHAT = [{"role": "user", "content": "Say hi."}]
PAIRS = [
    (CHAT, [{"role": "assistant", "content": "Hello! How are you today?"}], [{"role": "assistant", "content": "No."}]),
    ("The capital of France is", " Paris.", " Berlin, the capital of Germany."),
    ("Two plus two is", " four.", " five"),
    ([{"role": "system", "content": "Be short."}, *CHAT], [{"role": "assistant", "content": "Hi."}],
     [{"role": "assistant", "content": "Good answer, bad answer, long answer."}]),
]


@pytest.fixture
def models(tiny_model_dir: Path) -> Models:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    return perturbed_policy(models)


def test_chat_completion_ends_with_end_of_turn(models: Models) -> None:
    tok = models.tokenizer
    [enc] = encode(tok, CHAT, [[{"role": "assistant", "content": "Hello!"}]])
    assert tok.decode(enc.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(enc.completion_ids) == "Hello!<|im_end|>\n"


def test_string_completion_gets_eos_once(models: Models) -> None:
    tok = models.tokenizer
    a, b = encode(tok, "Two plus two is", [" four.", " four.<|im_end|>"])
    assert tok.decode(a.completion_ids) == " four.<|im_end|>"
    assert a == b


def test_truncation_is_recorded(models: Models) -> None:
    [enc] = encode(models.tokenizer, "The capital of France is", [" Paris. " * 20], max_length=12)
    assert enc.truncated and len(enc.input_ids) == 12 and len(enc.prompt_ids) >= 3


def test_score_matches_a_plain_full_forward(models: Models) -> None:
    """Our completion-only projection equals log_softmax over a full forward's logits."""
    [enc] = encode(models.tokenizer, CHAT, [[{"role": "assistant", "content": "Hello there."}]])
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        logits = models.policy.model(input_ids=ids).logits[0, :-1]
        full = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0][len(enc.prompt_ids) - 1 :]
        ours = completion_token_logps(models.policy.model, [enc], models.tokenizer.pad_token_id, models.device)[0]
    assert torch.allclose(ours, full, atol=1e-5)


def test_rows_sharing_a_prompt_score_as_whole_rows(models: Models) -> None:
    """The scorer computes each prompt once per batch (`shared_prompt`): three slots on one prompt,
    two on another, one plain-text row; each row's log-probs equal one whole-row forward."""
    scorer = Scorer(models, batch_size=8)
    slots = [[{"role": "assistant", "content": t}] for t in ("Hi!", "Hello there, friend.", "No")]
    rows = [*scorer.encode(CHAT, slots),
            *scorer.encode(PAIRS[3][0], [PAIRS[3][1], PAIRS[3][2]]), *scorer.encode("Two plus two is", [" four."])]
    shared = scorer.token_logps(models.policy, rows)
    with torch.no_grad():
        whole = [completion_token_logps(models.policy.model, [r], models.tokenizer.pad_token_id, models.device)[0]
                 for r in rows]
    for ours, theirs in zip(shared, whole, strict=True):
        assert ours.shape == theirs.shape
        assert torch.allclose(ours, theirs, atol=1e-5)
    assert len({round(float(w.sum()), 3) for w in whole}) == len(rows)  # distinct rows: a mix-up would show


def test_a_policy_with_the_references_weights_takes_no_second_pass(tiny_model_dir: Path) -> None:
    """A fresh policy (LoRA B = 0) has the reference's identity: its log-probs are the reference's,
    computed once; once the policy has weights of its own, both passes run and differ."""
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    scorer = Scorer(models)
    calls: list[str] = []
    real = scorer.token_logps
    scorer.token_logps = lambda role, rows, progress=None: calls.append(role.name) or real(role, rows, progress)
    done: list[int] = []
    fresh = scorer.score_pairs(PAIRS, beta=0.1, progress=done.append)
    assert scorer.policy_is_reference and calls == ["reference"] and sum(done) == 4 * len(PAIRS)
    with torch.no_grad(), models.policy.active() as model:  # what the skipped pass would have computed
        direct = [completion_token_logps(model, [e], models.tokenizer.pad_token_id, models.device)[0]
                  for e in scorer.encode(PAIRS[0][0], [PAIRS[0][1], PAIRS[0][2]])]
    assert fresh[0].chosen.logp_policy == pytest.approx(float(direct[0].sum()), abs=1e-5)
    assert all(s.chosen.logp_policy == s.chosen.logp_ref and s.reward_margin == 0 for s in fresh)
    perturbed_policy(models)
    moved = Scorer(models).score_pairs(PAIRS, beta=0.1)
    assert all(s.chosen.logp_policy != s.chosen.logp_ref for s in moved)


def test_batched_equals_one_at_a_time(models: Models) -> None:
    batched = Scorer(models, batch_size=8).score_pairs(PAIRS, beta=0.1)
    single = Scorer(models, batch_size=1).score_pairs(PAIRS, beta=0.1)
    for b, s in zip(batched, single, strict=True):
        assert b.chosen.logp_policy == pytest.approx(s.chosen.logp_policy, abs=1e-4)
        assert b.rejected.logp_ref == pytest.approx(s.rejected.logp_ref, abs=1e-4)
        assert b.dpo_loss == pytest.approx(s.dpo_loss, abs=1e-5)


def test_scores_are_consistent(models: Models) -> None:
    for s in Scorer(models).score_pairs(PAIRS, beta=0.5):
        for r in (s.chosen, s.rejected):
            assert r.reward == pytest.approx(0.5 * (r.logp_policy - r.logp_ref), abs=1e-5)
            assert sum(r.token_log_ratios) == pytest.approx(r.log_ratio, abs=1e-4)
            assert r.n_tokens == len(r.token_log_ratios) and r.logp_policy < 0
        assert s.reward_margin == pytest.approx(s.chosen.reward - s.rejected.reward)
        assert s.p_chosen == pytest.approx(1 / (1 + math.exp(-s.reward_margin)), abs=1e-6)
        assert s.dpo_loss == pytest.approx(-math.log(s.p_chosen), abs=1e-5)


def test_reference_cache_saves_the_reference_pass(models: Models, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = Scorer(models)
    first = scorer.score_pairs(PAIRS, beta=0.1)
    calls: list[int] = []
    real = scorer.token_logps

    def counting(role, rows, progress=None):
        calls.append(len(rows))
        return real(role, rows, progress)

    monkeypatch.setattr(scorer, "token_logps", counting)
    perturbed_policy(models, seed=5)  # a new policy; the reference is unchanged
    second = scorer.score_pairs(PAIRS, beta=0.1)
    assert calls == [2 * len(PAIRS)]  # one policy pass, no reference pass
    assert [s.chosen.logp_ref for s in second] == [s.chosen.logp_ref for s in first]
    assert [s.chosen.logp_policy for s in second] != [s.chosen.logp_policy for s in first]


def run_score(tiny: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "score", "--sft", str(tiny), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={"PLAYGROUND_HOME": str(home), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow  # a subprocess CLI
def test_score_cli_writes_every_column(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": p, "chosen": c, "rejected": r, "id": i})
                             for i, (p, c, r) in enumerate(PAIRS)) + "\n")
    out = tmp_path / "scored.jsonl"
    proc = run_score(tiny_model_dir, tmp_path, "--pairs", str(src), "--out", str(out), "--max-length", "16")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert r["reward_margin"] == pytest.approx(r["reward_chosen"] - r["reward_rejected"])
        assert r["p_chosen"] == pytest.approx(1 / (1 + math.exp(-r["reward_margin"])), abs=1e-6)
        assert r["logp_ref_chosen"] == pytest.approx(r["logp_policy_chosen"])  # fresh policy
    n_truncated = sum(r["truncated"] for r in rows)
    assert n_truncated >= 1
    assert f"({'0'} skipped, {n_truncated} truncated)" in proc.stderr


@pytest.mark.slow  # a subprocess CLI
def test_score_cli_bad_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "pairs.jsonl"
    src.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": ""'
                   ', "rejected": "c"}\n{"prompt": "a"}\nnot json\n')
    out = tmp_path / "scored.jsonl"
    proc = run_score(tiny_model_dir, tmp_path, "--pairs", str(src), "--out", str(out))
    assert proc.returncode == 1 and not out.exists()
    assert "line 2: 'chosen' is empty" in proc.stderr
    assert "line 3: missing 'chosen'" in proc.stderr
    assert "line 4: not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_score(tiny_model_dir, tmp_path, "--pairs", str(src), "--out", str(out), "--skip-invalid")
    assert proc.returncode == 0
    assert len(out.read_text().splitlines()) == 1
    assert "(3 skipped" in proc.stderr


@pytest.mark.slow  # a subprocess CLI
def test_score_cli_bad_flags(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = run_score(tiny_model_dir, tmp_path, "--pairs", str(tmp_path / "none.jsonl"), "--out", "x.jsonl")
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run_score(tiny_model_dir, tmp_path, "--pairs", "x", "--out", "y", "--beta", "0")
    assert proc.returncode == 2 and "argument --beta: β must be > 0 (got 0.0)" in proc.stderr


def test_rounds_scored_at_the_same_moment_share_one_set_of_forwards(models: Models) -> None:
    """Scores that wait for the model lock together are computed together (one policy and one
    reference pass for all), and each caller gets exactly what scoring alone gives it."""
    import threading
    import time

    alone = [Scorer(models).score_responses(p, [c, r], beta=0.1 * (i + 1)) for i, (p, c, r) in enumerate(PAIRS[:3])]
    scorer, passes = Scorer(models), []
    token_logps = scorer.token_logps
    scorer.token_logps = lambda role, rows, progress=None: passes.append(len(rows)) or token_logps(role, rows)
    results: dict[int, list] = {}
    threads = [threading.Thread(target=lambda i=i, p=p, c=c, r=r: results.__setitem__(
        i, scorer.score_responses(p, [c, r], beta=0.1 * (i + 1)))) for i, (p, c, r) in enumerate(PAIRS[:3])]
    with models.lock:  # as the scheduler holds it for a step: the three rounds queue up meanwhile
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(scorer._jobs) < 3 and time.monotonic() < deadline:  # all three are waiting for the lock
            time.sleep(0.01)
    for t in threads:
        t.join()
    assert passes == [6, 6]  # one policy pass and one reference pass over the 3 × 2 responses
    for i in range(3):
        assert [s.reward for s in results[i]] == pytest.approx([s.reward for s in alone[i]], abs=1e-5)
        assert [s.logp_policy for s in results[i]] == pytest.approx([s.logp_policy for s in alone[i]], abs=1e-4)
