"""Judges, judge runs, win rates against a baseline and the battles the leaderboard reads."""

from pathlib import Path

import pytest

from evals.battles import HUMAN, collect_battles, human_battles
from evals.judge import main as judge_main
from evals.judge import rule_judge
from evals.winrate import checkpoint_timeline, win_rate, win_rate_table
from playground.core.errors import PlaygroundError
from playground.models.checkpoints import set_policy_weights
from playground.models.roles import ModelsConfig, adapter_params, load_models
from playground.scoring.generation import GenerationSettings
from service.evaluation import run_judge
from service.state import AppState
from tests.conftest import make_vote
from tests.test_models import perturb_adapter

PROMPT = [{"role": "user", "content": "Hi?"}]


def test_rule_judges() -> None:
    shorter = rule_judge("shorter")
    verdicts = shorter.decide([PROMPT] * 4, ["ok", "a long answer", "same", "  "], ["a longer one", "no", "four", ""])
    assert [w for w, _ in verdicts] == ["model_a", "model_b", "tie", "tie (bothbad)"]
    assert [w for w, _ in shorter.decide([PROMPT], [""], ["long but present"])] == ["model_b"]  # empty loses
    contains = rule_judge("contains:Paris")
    assert [w for w, _ in contains.decide([PROMPT] * 3, ["in paris", "x", "Paris"], ["y", "PARIS!", "paris"])] == [
        "model_a", "model_b", "tie"]
    assert rule_judge("avoids:sorry").decide([PROMPT], ["Sorry, no."], ["Yes."])[0][0] == "model_b"
    assert contains.name == "rule:contains:Paris"
    for bad in ("fastest", "contains:", "shorter:x"):
        with pytest.raises(PlaygroundError, match="unknown judge"):
            rule_judge(bad)


def battle(a: str, b: str, winner: str, len_a: int = 10, len_b: int = 20) -> dict:
    return {"model_a": a, "model_b": b, "winner": winner, "len_a": len_a, "len_b": len_b}


def test_win_rate_counts_ties_as_half_with_a_wilson_interval() -> None:
    battles = [battle("p", "sft", "model_a")] * 6 + [battle("sft", "p", "model_a", 30, 10)] * 2 + \
        [battle("p", "sft", "tie")] * 2 + [battle("p", "x", "model_a")] * 5
    r = win_rate(battles, "p", "sft")
    assert (r.n, r.wins, r.losses, r.ties) == (10, 6, 2, 2)
    assert r.rate == pytest.approx(0.7)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.3968, 0.8922), abs=1e-4)  # Wilson for 7 of 10
    assert r.mean_len == pytest.approx((6 * 10 + 2 * 10 + 2 * 10) / 10)
    assert r.baseline_mean_len == pytest.approx((6 * 20 + 2 * 30 + 2 * 20) / 10)
    assert win_rate(battles, "x", "sft").rate is None
    table = win_rate_table(battles, "sft")
    assert list(table["model"]) == ["p"]
    timeline = checkpoint_timeline(battles, [{"id": "p", "created_at": 5.0}, {"id": "q", "created_at": 6.0}])
    assert list(timeline["checkpoint"]) == ["p"] and timeline["rate"][0] == pytest.approx(0.7)


@pytest.fixture
def state(tiny_state: AppState) -> AppState:
    """A policy with weights of its own: a fresh one is the SFT model, and a judge refuses SFT vs itself."""
    models = tiny_state.models
    weights = {n: p.detach() + 0.5 if "lora_B" in n else p.detach()
               for n, p in adapter_params(models.policy.model).items()}
    set_policy_weights(models, weights, "trained", f"{models.sft.ident}+trained")
    return tiny_state


def test_human_battles_use_rated_names_and_skip_self_battles(state: AppState) -> None:
    # Response i is i + 1 characters long.
    state.store.add_vote(make_vote(("policy", "sft"), "a", texts=("x", "xx"), rated_as=("dpo-1", "sft")))
    state.store.add_vote(make_vote(("sft", "reference"), "b", texts=("x", "xx"),
                                   rated_as=("sft", "sft")))  # one model twice: no battle
    state.store.add_vote(make_vote(("policy", "sft", "reference"), "ranking", texts=("x", "xx", "xxx"),
                                   rated_as=("dpo-2", "sft", "sft"), ranking=(2, 0, 1)))
    rows = human_battles(state.store)
    assert [(r["model_a"], r["model_b"], r["winner"], r["len_a"], r["len_b"]) for r in rows] == [
        ("dpo-1", "sft", "model_a", 1, 2), ("dpo-2", "sft", "model_a", 1, 2), ("dpo-2", "sft", "model_b", 1, 3)]
    assert {r["source"] for r in rows} == {HUMAN}


def test_a_judge_run_is_stored_apart_from_votes(state: AppState) -> None:
    prompts = [PROMPT, [{"role": "user", "content": "Say a word."}], [{"role": "user", "content": "Two?"}]]
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6, seed=1)
    battles = run_judge(state, prompts, ["policy", "sft"], rule_judge("longer"), settings)
    assert len(battles) == 3  # 3 prompts × 1 pair
    assert {(b["model_a"], b["model_b"]) for b in battles} <= {("policy", "sft"), ("sft", "policy")}
    stored = state.store.judge_battles("rule:longer")
    assert [(b["model_a"], b["model_b"], b["winner"]) for b in stored] == [
        (b["model_a"], b["model_b"], b["winner"]) for b in battles]
    for b in stored:
        longer = len(b["text_a"].strip()) - len(b["text_b"].strip())
        expected = "model_a" if longer > 0 else "model_b" if longer < 0 else b["winner"]
        assert b["winner"] == expected
    assert state.store.votes() == []
    assert collect_battles(state.store) == [] and len(collect_battles(state.store, judges=["rule:longer"])) == 3
    with pytest.raises(PlaygroundError, match="the same weights"):  # the reference is the SFT model here
        run_judge(state, prompts, ["policy", "sft", "reference"], rule_judge("longer"), settings)
    with pytest.raises(PlaygroundError, match="unknown model"):
        run_judge(state, prompts, ["policy", "gpt-9"], rule_judge("longer"), settings)


def test_judge_cli_prints_win_rates(tiny_model_dir: Path, home: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))  # a trained adapter: a fresh one is SFT
    perturb_adapter(models.policy.model)
    models.policy.model.save_pretrained(tmp_path / "adapter")
    code = judge_main(["--sft", str(tiny_model_dir), "--policy", str(tmp_path / "adapter"), "--models", "policy,sft",
                       "--judge", "shorter", "--max-new-tokens", "4", "--temperature", "1.0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "16 battles judged by rule:shorter" in out  # the shipped eval set has 16 prompts
    assert "win rate against sft" in out and "policy" in out
