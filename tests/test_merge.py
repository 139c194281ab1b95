"""Vote merging (`playground.data.merge`): plurality over pair labels, ranked pairs over rankings, and
the judged-item types they merge."""

import itertools
import random
from types import MappingProxyType

import pytest

from playground.data.merge import (
    MERGE_RULES,
    Judgement,
    Ranking,
    merge_pair_votes,
    merge_rankings,
    merge_rule_metadata,
)


def vote(item: str, voter: str, label: str, left: str = "p", right: str = "q") -> Judgement:
    return Judgement(item, voter, label, left, right)


def test_judgement_validation() -> None:
    with pytest.raises(ValueError, match="neither shown response"):
        vote("i1", "ana", "a")
    with pytest.raises(ValueError, match="same response"):
        vote("i1", "ana", "p", "p", "p")
    with pytest.raises(ValueError, match="may not be"):
        vote("i1", "ana", "p", "p", "tie")
    with pytest.raises(ValueError, match="repeats"):
        Ranking("i1", "ana", ("a", "b", "a"))


# ----------------------------------------------------------------------------------------- merging pairs


def test_merge_clear_majority() -> None:
    result = merge_pair_votes([vote("i1", "ana", "q"), vote("i1", "bob", "q", "q", "p"), vote("i1", "cy", "p")])
    assert (result.outcome, result.chosen, result.rejected) == ("pair", "q", "p")
    assert result.counts == (("q", 2), ("p", 1))
    assert (result.n_votes, result.responses) == (3, ("p", "q"))
    # A plurality is enough when tie/both_bad are spread: 2 p, 1 q, 1 tie → p.
    plural = merge_pair_votes([vote("i1", v, label) for v, label in zip("abcd", ["p", "q", "p", "tie"], strict=True)])
    assert (plural.outcome, plural.chosen, plural.rejected) == ("pair", "p", "q")


def test_merge_split_is_dropped_or_kept_as_tie() -> None:
    split = [vote("i1", "ana", "p"), vote("i1", "bob", "q")]
    dropped = merge_pair_votes(split)
    assert (dropped.outcome, dropped.chosen, dropped.rejected) == ("dropped", None, None)
    kept = merge_pair_votes(split, ties="keep")
    assert (kept.outcome, kept.chosen, kept.rejected) == ("tie", None, None)
    assert kept.counts == (("p", 1), ("q", 1))


@pytest.mark.parametrize(("labels", "kept"), [
    (["p", "tie", "tie"], "tie"),  # tie plurality
    (["p", "p", "tie", "tie"], "tie"),  # a response sharing the top with tie
    (["both_bad", "both_bad", "p"], "both_bad"),  # both_bad alone leads
    (["tie", "both_bad"], "tie"),  # no single no-preference label leads
])
def test_merge_no_preference_pluralities(labels: list[str], kept: str) -> None:
    votes = [vote("i1", f"v{n}", label) for n, label in enumerate(labels)]
    assert merge_pair_votes(votes).outcome == "dropped"
    assert merge_pair_votes(votes, ties="keep").outcome == kept


def test_merge_pair_votes_ignores_input_order() -> None:
    votes = [vote("i1", "ana", "p"), vote("i1", "bob", "q", "q", "p"), vote("i1", "cy", "p", "q", "p"),
             vote("i1", "dee", "tie")]
    results = {merge_pair_votes(list(perm)) for perm in itertools.permutations(votes)}
    assert len(results) == 1 and results.pop().chosen == "p"


def test_merge_pair_votes_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="several items"):
        merge_pair_votes([vote("i1", "ana", "p"), vote("i2", "bob", "p")])
    with pytest.raises(ValueError, match="ties must be"):
        merge_pair_votes([vote("i1", "ana", "p")], ties="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no judgements"):
        merge_pair_votes([])


# ----------------------------------------------------------------------------------------- merging rankings


def rankings(profile: dict[str, int], item: str = "i1") -> list[Ranking]:
    """Voters v0, v1, … casting each ranking ("abc" = a best) as many times as `profile` says."""
    orders = [tuple(order) for order, count in profile.items() for _ in range(count)]
    return [Ranking(item, f"v{n}", order) for n, order in enumerate(orders)]


def test_ranked_pairs_with_one_voter_returns_that_ranking() -> None:
    assert merge_rankings([Ranking("i1", "ana", ("c", "a", "d", "b"))]) == ("c", "a", "d", "b")


@pytest.mark.parametrize(("profile", "expected"), [
    # 4 × abc, 2 × bca, 3 × cab: a>b 7–2 (margin 5), b>c 6–3 (3), c>a 5–4 (1), a Condorcet cycle.
    # Lock a>b, b>c; c>a would close the cycle and is the weakest link, so it is skipped.
    ({"abc": 4, "bca": 2, "cab": 3}, ("a", "b", "c")),
    # The same profile relabelled a→c, b→a, c→b: the answer follows the margins, not the ids.
    ({"cab": 4, "abc": 2, "bca": 3}, ("c", "a", "b")),
])
def test_ranked_pairs_breaks_a_condorcet_cycle_at_its_weakest_link(profile: dict[str, int], expected: tuple) -> None:
    votes = rankings(profile)
    margin = {(x, y): sum((r.order.index(x) < r.order.index(y)) - (r.order.index(y) < r.order.index(x)) for r in votes)
              for x, y in itertools.permutations("abc", 2)}
    first, second, third = expected
    assert (margin[(first, second)], margin[(second, third)], margin[(third, first)]) == (5, 3, 1)
    assert merge_rankings(votes) == expected


def test_ranked_pairs_majorities_and_unresolved_pairs() -> None:
    # b>a 2–1, b>c 3–0, a>c 2–1: no cycle, the Condorcet order.
    assert merge_rankings(rankings({"abc": 1, "bca": 1, "bac": 1})) == ("b", "a", "c")
    # Two opposite voters lock nothing: the order falls back to the ids.
    assert merge_rankings(rankings({"cba": 1, "abc": 1})) == ("a", "b", "c")
    # k = 4: d beats everyone 2–1; a>b and a>c 2–1 but b vs c 2–1 too.
    assert merge_rankings(rankings({"dabc": 1, "dacb": 1, "bcad": 1})) == ("d", "a", "b", "c")


def test_ranked_pairs_is_independent_of_input_order() -> None:
    votes = rankings({"abcd": 3, "bcda": 2, "cdab": 2, "dbca": 1})
    results = {merge_rankings(random.Random(seed).sample(votes, len(votes))) for seed in range(30)}
    assert len(results) == 1


def test_merge_rankings_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="different responses"):
        merge_rankings([Ranking("i1", "ana", ("a", "b")), Ranking("i1", "bob", ("a", "c"))])
    with pytest.raises(ValueError, match="more than once"):
        merge_rankings([Ranking("i1", "ana", ("a", "b")), Ranking("i1", "ana", ("b", "a"))])
    with pytest.raises(ValueError, match="several items"):
        merge_rankings([Ranking("i1", "ana", ("a", "b")), Ranking("i2", "bob", ("a", "b"))])


def test_merge_rule_metadata() -> None:
    drop, keep = merge_rule_metadata("drop"), merge_rule_metadata("keep")
    assert set(drop) == {"pairs", "rankings", "ties"} and drop["ties"] == "drop"
    assert drop["pairs"].endswith("dropped") and "kept as both_bad" in keep["pairs"]
    assert "ranked pairs (Tideman)" in drop["rankings"]
    assert isinstance(MERGE_RULES, MappingProxyType)
    with pytest.raises(TypeError):
        MERGE_RULES["pairs"] = "anything"  # type: ignore[index]
