"""Judges, judge runs, win rates against a baseline and the battles the leaderboard reads."""

from pathlib import Path

import pytest

from cli.judge import main as judge_main
from evals.battle import Battle
from evals.battles import HUMAN, human_battles, judge_battles
from evals.judge import Judge, Verdict, both_orders, position_consistency, reward_model_judge, rule_judge
from evals.winrate import checkpoint_timeline, win_rate, win_rate_table
from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.data.store.checkpoints import RegisteredCheckpoint
from playground.inference.generation import Generation
from playground.inference.settings import ENDED, GenerationSettings
from playground.models.checkpoints import set_policy_weights
from playground.models.roles import ModelsConfig, adapter_params, load_models
from playground.training.reward_model import RewardConfig, train_reward_model
from service.evaluation import run_judge
from service.state import AppState
from tests.conftest import make_vote
from tests.test_models import perturb_adapter
from tests.test_reward_model import short_vs_long

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


def battle(a: str, b: str, winner: str, len_a: int = 10, len_b: int = 20) -> Battle:
    return Battle(a, b, winner, len_a=len_a, len_b=len_b)


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
    registered = [RegisteredCheckpoint(name, Path(name), None, at, {}) for name, at in (("p", 5.0), ("q", 6.0))]
    timeline = checkpoint_timeline(battles, registered)
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
    state.store.votes.add(make_vote(("policy", "sft"), "a", texts=("x", "xx"), rated_as=("dpo-1", "sft")))
    state.store.votes.add(make_vote(("sft", "reference"), "b", texts=("x", "xx"),
                                    rated_as=("sft", "sft")))  # one model twice: no battle
    state.store.votes.add(make_vote(("policy", "sft", "reference"), "ranking", texts=("x", "xx", "xxx"),
                                    rated_as=("dpo-2", "sft", "sft"), ranking=(2, 0, 1)))
    rows = human_battles(state.store)
    assert [(r.model_a, r.model_b, r.winner, r.len_a, r.len_b) for r in rows] == [
        ("dpo-1", "sft", "model_a", 1, 2), ("dpo-2", "sft", "model_a", 1, 2), ("dpo-2", "sft", "model_b", 1, 3)]
    assert {r.source for r in rows} == {HUMAN}


def test_a_judge_run_is_stored_apart_from_votes(state: AppState) -> None:
    prompts = [PROMPT, [{"role": "user", "content": "Say a word."}], [{"role": "user", "content": "Two?"}]]
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6, seed=1)
    battles = run_judge(state, prompts, ["policy", "sft"], rule_judge("longer"), settings)
    assert len(battles) == 3  # 3 prompts × 1 pair
    assert {(b.model_a, b.model_b) for b in battles} <= {("policy", "sft"), ("sft", "policy")}
    stored = state.store.judges.list("rule:longer")
    assert [(b.model_a, b.model_b, b.winner) for b in stored] == [(b.model_a, b.model_b, b.winner) for b in battles]
    assert len({b.run for b in stored}) == 1 and len({b.id for b in stored}) == 3  # one run, three battles
    for b in stored:
        assert b.winner == longer_wins(b.text_a, b.text_b)
    assert state.store.votes.list() == []
    assert human_battles(state.store) == [] and len(judge_battles(state.store, ["rule:longer"])) == 3
    with pytest.raises(PlaygroundError, match="the same weights"):  # the reference is the SFT model here
        run_judge(state, prompts, ["policy", "sft", "reference"], rule_judge("longer"), settings)
    with pytest.raises(PlaygroundError, match="unknown model"):
        run_judge(state, prompts, ["policy", "gpt-9"], rule_judge("longer"), settings)


def longer_wins(text_a: str, text_b: str) -> str:
    """The "longer" rule's verdict, written out: the longer stripped answer wins, equal lengths tie,
    and two empty answers are both bad."""
    longer = len(text_a.strip()) - len(text_b.strip())
    if longer:
        return "model_a" if longer > 0 else "model_b"
    return "tie" if text_a.strip() else "tie (bothbad)"


def test_a_rule_judge_run_ties_equal_lengths(state: AppState, monkeypatch: pytest.MonkeyPatch) -> None:
    # Scripted answers (policy's, sft's) per prompt: equal lengths once stripped (a judge that counted
    # the trailing space would not tie), both empty, and one longer.
    answers = {"Hi?": ["same ", "four"], "Say a word.": ["  ", ""], "Two?": ["a longer one", "no"]}
    def scripted(scheduler, roles, messages, settings):  # stream_generate's last yield: the scripted answers
        texts = tuple(answers[messages[-1]["content"]])
        yield Generation((), texts, ((),) * len(texts), (ENDED,) * len(texts), tuple(r.ident for r in roles))

    monkeypatch.setattr("service.evaluation.stream_generate", scripted)
    prompts = [[{"role": "user", "content": q}] for q in answers]
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6, seed=1)
    battles = run_judge(state, prompts, ["policy", "sft"], rule_judge("longer"), settings)
    policy = state.rated_name("policy")
    assert [b.winner for b in battles[:2]] == ["tie", "tie (bothbad)"]
    assert battles[2].winner == ("model_a" if battles[2].model_a == policy else "model_b")
    stored = state.store.judges.list("rule:longer")
    assert [b.winner for b in stored] == [longer_wins(b.text_a, b.text_b) for b in stored]


def test_judge_cli_prints_win_rates(tiny_model_dir: Path, home: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))  # a trained adapter: a fresh one is SFT
    perturb_adapter(models.policy.model)
    models.policy.model.save_pretrained(tmp_path / "adapter")
    code = judge_main(["--sft", str(tiny_model_dir), "--policy", str(tmp_path / "adapter"), "--models", "policy,sft",
                       "--judge", "shorter", "--max-new-tokens", "4", "--temperature", "1.0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "16 battles judged by rule:shorter in both orders" in out  # the shipped eval set has 16 prompts
    assert "position consistency 1.000  [0.806, 1.000]  (16 of 16 pairs" in out  # Wilson, 16 of 16
    assert "win rate against sft" in out and "policy" in out


def scripted(verdicts: list[str]) -> Judge:
    """A judge whose single-order decide answers `verdicts` in turn (the (A, B) orders, then the (B, A)
    ones), with the battle's position as its number, run through `both_orders` like every judge."""
    def decide(prompts: object, a: list[str], b: list[str]) -> list[Verdict]:
        assert len(a) == len(verdicts)
        return [(w, {"at": i, "first": x}) for i, (w, x) in enumerate(zip(verdicts, a, strict=True))]
    return Judge("scripted", both_orders(decide))


def test_both_orders_win_only_when_they_agree_on_the_model() -> None:
    # (A, B) verdicts, then the (B, A) verdicts in that order's own terms: "model_b" there is model_a here.
    ab = ["model_a", "model_b", "model_a", "tie", "tie (bothbad)", "tie (bothbad)", "model_b"]
    ba = ["model_b", "model_a", "model_a", "tie", "tie (bothbad)", "tie", "tie"]
    verdicts = scripted(ab + ba).decide([PROMPT] * 7, [f"a{i}" for i in range(7)], [f"b{i}" for i in range(7)])
    assert [w for w, _ in verdicts] == ["model_a", "model_b", "tie", "tie", "tie (bothbad)", "tie", "tie"]
    assert [d["consistent"] for _, d in verdicts] == [True, True, False, True, True, False, False]
    _, details = verdicts[2]  # both orders' verdicts and numbers are kept; the swapped order saw b first
    assert details["ab"] == {"winner": "model_a", "at": 2, "first": "a2"}
    assert details["ba"] == {"winner": "model_a", "at": 9, "first": "b2"}
    result = position_consistency([Battle("x", "y", w, details=d) for w, d in verdicts]
                                  + [Battle("x", "y", "tie", details={"p_a": 0.5})])
    assert (result.consistent, result.n, result.unswapped) == (4, 7, 1)  # the last was judged in one order only
    assert result.rate == pytest.approx(4 / 7)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.2504, 0.8418), abs=1e-4)  # Wilson, 4 of 7
    assert position_consistency([]).rate is None
    with pytest.raises(PlaygroundError, match="gave 1 verdicts for 2 battles"):
        both_orders(lambda p, a, b: [("tie", {})])([PROMPT], ["x"], ["y"])


def test_rule_judges_are_order_free(state: AppState) -> None:
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6, seed=2)
    prompts = [PROMPT, [{"role": "user", "content": "Say a word."}], [{"role": "user", "content": "Two?"}]]
    run_judge(state, prompts, ["policy", "sft"], rule_judge("shorter"), settings)
    stored = state.store.judges.list("rule:shorter")
    result = position_consistency(judge_battles(state.store, ["rule:shorter"]))
    assert (result.consistent, result.n, result.rate) == (3, 3, 1.0)
    for b in stored:  # the swapped order's verdict names the same model, in its own terms
        assert b.details["ab"]["winner"] == b.winner
        assert b.details["ba"]["score_a"] == b.details["ab"]["score_b"]


def test_a_position_biased_judge_is_never_consistent_and_only_ties(state: AppState) -> None:
    def always_a(prompts: object, a: list[str], b: list[str]) -> list[Verdict]:
        return [("model_a", {}) for _ in a]

    prompts = [PROMPT, [{"role": "user", "content": "Say a word."}], [{"role": "user", "content": "Two?"}]]
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6, seed=1)
    battles = run_judge(state, prompts, ["policy", "sft"], Judge("biased", both_orders(always_a)), settings)
    assert [b.winner for b in battles] == ["tie"] * 3
    result = position_consistency(judge_battles(state.store, ["biased"]))
    assert (result.consistent, result.n, result.rate) == (0, 3, 0.0)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.0, 0.5615), abs=1e-4)  # Wilson, 0 of 3


def test_the_reward_model_judge_is_order_free(state: AppState, tiny_model_dir: Path, tmp_path: Path) -> None:
    trained = train_reward_model(tiny_model_dir, state.models.tokenizer, short_vs_long(),
                                 RewardConfig(lr=5e-3, steps=10), device="cpu")
    assert trained.model is not None
    judge = reward_model_judge(trained.model.save(tmp_path / "rm"), state.models)
    assert judge.name == "reward-model:rm"
    prompts: list[list[Message]] = [[{"role": "user", "content": q}] for q in ("Hi?", "Say a word.", "Two?", "Sea?")]
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8, seed=4)
    run_judge(state, prompts, ["policy", "sft"], judge, settings)
    stored = state.store.judges.list("reward-model:rm")
    result = position_consistency(judge_battles(state.store, ["reward-model:rm"]))
    assert (result.consistent, result.n, result.rate) == (4, 4, 1.0)
    for b in stored:
        ab, ba = b.details["ab"], b.details["ba"]
        assert (ba["reward_a"], ba["reward_b"]) == (ab["reward_b"], ab["reward_a"])  # the same rewards, swapped
        assert ab["p_a"] + ba["p_a"] == pytest.approx(1.0)
        margin = ab["reward_a"] - ab["reward_b"]
        assert b.winner == ("model_a" if margin > 0 else "model_b" if margin < 0 else "tie")
    assert any(b.winner != "tie" for b in stored)  # decided battles, not only ties
