"""The vote model: validation, the pairs a vote implies, and its TRL and Arena rows."""

import pytest

from playground.core.errors import PlaygroundError
from playground.data.votes import Response, Vote, to_arena_rows, to_trl_rows, vote_pairs
from tests.conftest import make_vote

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]
MODELS = ("sft", "policy", "reference", "ckpt-0003", "ckpt-0007")


def test_vote_pairs_for_each_outcome() -> None:
    assert vote_pairs(make_vote(outcome="a")) == [(0, 1)]
    assert vote_pairs(make_vote(outcome="b")) == [(1, 0)]
    assert vote_pairs(make_vote(outcome="tie")) == []
    assert vote_pairs(make_vote(outcome="both_bad")) == []
    assert vote_pairs(make_vote(outcome="ranking", ranking=(1, 0))) == [(1, 0)]
    assert vote_pairs(make_vote(MODELS[:3], "ranking", ranking=(2, 0, 1))) == [(2, 0), (2, 1), (0, 1)]
    assert len(vote_pairs(make_vote(MODELS[:4], "ranking", ranking=(3, 1, 0, 2)))) == 6


def test_trl_row_for_a_pair_vote() -> None:
    assert to_trl_rows([make_vote(outcome="b", texts=("answer 0", "answer 1"), prompt=PROMPT, id=12)]) == [{
        "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": "answer 1"}],
        "rejected": [{"role": "assistant", "content": "answer 0"}],
        "vote_id": 12,
        "chosen_model": "policy",
        "rejected_model": "sft",
        "voter": "ana",
    }]


def test_ties_and_both_bad_give_no_trl_rows() -> None:
    assert to_trl_rows([make_vote(outcome="tie"), make_vote(outcome="both_bad")]) == []
    assert [r["vote_id"] for r in to_trl_rows([make_vote(outcome="tie", id=1), make_vote(outcome="a", id=2)])] == [2]


def test_ranking_all_pairs() -> None:
    rows = to_trl_rows([make_vote(MODELS[:4], "ranking", texts=[f"answer {i}" for i in range(4)],
                                  ranking=(3, 1, 0, 2), id=1)], "all_pairs")
    assert [(r["chosen_model"], r["rejected_model"]) for r in rows] == [
        ("ckpt-0003", "policy"), ("ckpt-0003", "sft"), ("ckpt-0003", "reference"),
        ("policy", "sft"), ("policy", "reference"), ("sft", "reference"),
    ]
    assert (rows[0]["chosen"][0]["content"], rows[0]["rejected"][0]["content"]) == ("answer 3", "answer 1")


def _picks(votes: list[Vote], seed: int) -> dict[int, str]:
    return {r["vote_id"]: r["rejected_model"] for r in to_trl_rows(votes, "best_vs_random", seed)}


def test_ranking_best_vs_random_is_best_against_one_other_fixed_by_seed() -> None:
    votes = [make_vote(MODELS[:4], "ranking", ranking=(3, 1, 0, 2), id=i) for i in range(1, 41)]
    rows = to_trl_rows(votes, "best_vs_random", seed=5)
    assert len(rows) == 40
    assert {r["chosen_model"] for r in rows} == {"ckpt-0003"}
    picks = _picks(votes, 5)
    assert set(picks.values()) == {"sft", "policy", "reference"}  # drawn, not always the same one
    assert _picks(votes, 5) == picks
    assert _picks(votes, 6) != picks
    # A vote's draw depends on its id and the seed only, not on which other votes are exported.
    assert _picks(votes[10:11], 5) == {11: picks[11]}


def test_best_vs_random_leaves_pair_votes_alone() -> None:
    votes = [make_vote(outcome="a", id=1), make_vote(outcome="b", id=2),
             make_vote(outcome="ranking", ranking=(1, 0), id=3)]
    assert to_trl_rows(votes, "best_vs_random", 0) == to_trl_rows(votes, "all_pairs", 0)
    assert len(to_trl_rows(votes, "best_vs_random", 0)) == 3


def test_unknown_binarization_is_refused() -> None:
    with pytest.raises(PlaygroundError, match="binarize"):
        to_trl_rows([make_vote()], "best_of_n")  # type: ignore[arg-type]


@pytest.mark.parametrize(("outcome", "winner"), [
    ("a", "model_a"), ("b", "model_b"), ("tie", "tie"), ("both_bad", "tie (bothbad)"),
])
def test_arena_row_per_pair_outcome(outcome: str, winner: str) -> None:
    assert to_arena_rows([make_vote(outcome=outcome, id=4, anonymous=True, created_at=1000.0)]) == [{
        "model_a": "sft", "model_b": "policy", "winner": winner, "tstamp": 1000.0,
        "vote_id": 4, "voter": "ana", "anonymous": True,
    }]


def test_arena_ranking_is_one_battle_per_unordered_pair() -> None:
    rows = to_arena_rows([make_vote(MODELS[:3], "ranking", ranking=(2, 0, 1), id=9)])
    assert [(r["model_a"], r["model_b"], r["winner"]) for r in rows] == [
        ("sft", "policy", "model_a"),        # 0 ranked above 1
        ("sft", "reference", "model_b"),     # 2 ranked above 0
        ("policy", "reference", "model_b"),  # 2 ranked above 1
    ]
    assert {r["vote_id"] for r in rows} == {9}


@pytest.mark.parametrize(("changes", "message"), [
    ({"models": MODELS[:1]}, "2 to 4 responses, got 1"),
    ({"models": MODELS[:5], "outcome": "ranking", "ranking": (0, 1, 2, 3, 4)}, "2 to 4 responses, got 5"),
    ({"outcome": "win"}, "outcome 'win' is not one of"),
    ({"models": MODELS[:3], "outcome": "a"}, "needs exactly 2 responses"),
    ({"models": MODELS[:3], "outcome": "ranking"}, "needs a ranking"),
    ({"models": MODELS[:3], "outcome": "ranking", "ranking": (0, 1, 1)}, "exactly once"),
    ({"models": MODELS[:3], "outcome": "ranking", "ranking": (0, 1)}, "exactly once"),
    ({"models": MODELS[:3], "outcome": "ranking", "ranking": (0, 1, 3)}, "exactly once"),
    ({"models": MODELS[:2], "outcome": "ranking", "ranking": ("0", 1)}, "exactly once"),
    ({"outcome": "tie", "ranking": (0, 1)}, "takes no ranking"),
    ({"voter": "  "}, "voter name is empty"),
    ({"voter": "x" * 65}, "at most 64"),
    ({"voter": "ana\nbob"}, "control characters"),
    ({"prompt": []}, "non-empty list"),
    ({"prompt": [{"role": "robot", "content": "hi"}]}, "role 'robot'"),
    ({"prompt": [{"role": "user"}]}, "'role' and 'content'"),
    ({"settings": {"seed": object()}}, "plain JSON"),
    ({"anonymous": "yes"}, "true or false"),
    ({"created_at": float("nan")}, "unix time"),
])
def test_invalid_votes_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(PlaygroundError, match=message):
        make_vote(**changes)


@pytest.mark.parametrize(("model", "text", "scores", "message"), [
    ("", "hi", {}, "model name"),
    ("sft", None, {}, "must be a string"),
    ("sft", "hi", {"reward": float("inf")}, "finite number"),
    ("sft", "hi", {"reward": "high"}, "finite number"),
])
def test_invalid_responses_are_refused(model: str, text: str, scores: dict, message: str) -> None:
    with pytest.raises(PlaygroundError, match=message):
        Response(model, text, scores)


def test_voter_name_is_trimmed_and_sequences_become_tuples() -> None:
    """Vote's own constructor: built directly, with lists where tuples are stored."""
    responses = list(make_vote(MODELS[:3], "ranking", ranking=(0, 1, 2)).responses)
    vote = Vote(prompt=PROMPT, responses=responses, outcome="ranking", ranking=[1, 2, 0], voter="  ana ")
    assert vote.voter == "ana"
    assert vote.ranking == (1, 2, 0)
    assert isinstance(vote.responses, tuple)
    assert make_vote(voter="x" * 64).voter == "x" * 64


def test_trl_rows_leave_out_pairs_with_an_empty_response() -> None:
    vote = make_vote(("policy", "sft", "reference"), "ranking", texts=("Hello", "  \n", "Hey"), ranking=(0, 1, 2))
    rows = to_trl_rows([vote])
    assert [(r["chosen_model"], r["rejected_model"]) for r in rows] == [("policy", "reference")]
