"""Agreement statistics and vote merging: exact values on hand-computed and textbook data."""

import itertools
import random
from types import MappingProxyType

import pytest

from evals.agreement import (
    MERGE_RULES,
    Judgement,
    Ranking,
    agreement_with_majority,
    coincidence_matrix,
    group_by_item,
    krippendorff_alpha_nominal,
    latest_per_voter,
    merge_pair_votes,
    merge_rankings,
    merge_rule_metadata,
    most_disputed,
    pair_alpha,
    pair_units,
    position_bias,
    position_bias_stats,
    wilson_interval,
)


def vote(item: str, voter: str, label: str, left: str = "p", right: str = "q") -> Judgement:
    return Judgement(item, voter, label, left, right)


def simulate(n: int, left_rate: float, seed: int, voter: str = "sim", n_ties: int = 0) -> list[Judgement]:
    """n decided votes on distinct items shown in a random order, the left response winning with
    probability `left_rate`, plus `n_ties` tie votes that position bias must ignore."""
    rng = random.Random(seed)
    votes = []
    for i in range(n + n_ties):
        left, right = (f"{i}-x", f"{i}-y") if rng.random() < 0.5 else (f"{i}-y", f"{i}-x")
        label = "tie" if i >= n else left if rng.random() < left_rate else right
        votes.append(Judgement(f"{voter}-{i}", voter, label, left, right))
    return votes


# ----------------------------------------------------------------------------------------- alpha


def test_alpha_perfect_agreement_is_exactly_one() -> None:
    result = krippendorff_alpha_nominal({"u1": ["a", "a", "a"], "u2": ["b", "b"], "u3": ["a"], "u4": ["c", "c"]})
    assert result.alpha == 1.0
    assert result.reason is None
    assert (result.n_items, result.n_values) == (3, 7)  # u3 has a single value: not pairable
    assert result.observed_disagreement == 0.0


def test_alpha_krippendorff_textbook_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example: 4 observers,
    # 12 units, missing values as None. Unit 12 has one value and drops out, leaving n = 40 values with
    # n_1..n_5 = 9, 13, 10, 5, 3 and 8 off-diagonal coincidences (unit 6, 1/2/3/4, gives 4 of them):
    # α = 1 − (n − 1)·Σ_{c≠k} o_ck / (n² − Σ n_c²) = 1 − 39·8 / (1600 − 384) = 1 − 312/1216 ≈ 0.743.
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = {f"u{i + 1}": [str(o[i]) for o in observers if o[i] is not None] for i in range(12)}
    result = krippendorff_alpha_nominal(units)
    assert result.alpha == pytest.approx(1 - 312 / 1216, abs=1e-12)
    assert round(result.alpha, 3) == 0.743
    assert (result.n_items, result.n_values) == (11, 40)
    assert result.observed_disagreement == pytest.approx(8 / 40)
    assert result.expected_disagreement == pytest.approx(1216 / (40 * 39))
    matrix = coincidence_matrix(units)
    n_c = {c: sum(o for (row, _), o in matrix.items() if row == c) for c in "12345"}
    assert n_c == pytest.approx({"1": 9, "2": 13, "3": 10, "4": 5, "5": 3})
    # Off-diagonal cells: unit 2 (2, 3, 2) gives o_23 = o_32 = 2/2, unit 8 (1, 1, 2, 1) o_12 = o_21 = 3/3,
    # unit 6 (1, 2, 3, 4) 1/3 to each of its 12 ordered pairs.
    assert matrix[("2", "3")] == pytest.approx(1 + 1 / 3)
    assert matrix[("1", "2")] == pytest.approx(1 + 1 / 3)
    assert matrix[("3", "4")] == pytest.approx(1 / 3)
    assert ("4", "5") not in matrix


@pytest.mark.parametrize(("units", "alpha"), [
    # o_ab = o_ba = 1, o_aa = 2: n_a = 3, n_b = 1; D_o = 2/4, D_e = (16 − 10)/12 = 1/2 → α = 0.
    ({"u1": ["a", "b"], "u2": ["a", "a"]}, 0.0),
    # o_aa = o_bb = 2, o_ab = o_ba = 1: n_a = n_b = 3; D_o = 2/6, D_e = (36 − 18)/30 = 3/5 → α = 4/9.
    ({"u1": ["a", "a"], "u2": ["b", "b"], "u3": ["a", "b"]}, 4 / 9),
    # Three coders on one unit, each pair weighted 1/(m − 1) = 1/2: o_ab = o_ba = 1, o_aa = 1,
    # plus u2's o_bb = 2: n_a = 2, n_b = 3; D_o = 2/5, D_e = (25 − 13)/20 = 3/5 → α = 1/3.
    ({"u1": ["a", "a", "b"], "u2": ["b", "b"]}, 1 / 3),
])
def test_alpha_hand_computed(units: dict[str, list[str]], alpha: float) -> None:
    assert krippendorff_alpha_nominal(units).alpha == pytest.approx(alpha, abs=1e-12)


def test_alpha_of_random_labels_is_near_zero() -> None:
    rng = random.Random(3)
    units = {f"u{i}": [rng.choice("abcd") for _ in range(3)] for i in range(2000)}
    result = krippendorff_alpha_nominal(units)
    assert result.alpha is not None and abs(result.alpha) < 0.1
    assert (result.n_items, result.n_values) == (2000, 6000)


@pytest.mark.parametrize("no_preference", [True, False])
def test_pair_alpha_of_random_votes_is_near_zero_with_per_item_response_ids(no_preference: bool) -> None:
    # Every item has its own response ids and voters pick at random. The canonical categories give
    # chance-level alpha; raw response ids as categories would report spurious agreement (≈ 0.5 when
    # every vote picks a side, as chance agreement over 2000 distinct ids looks like ≈ 0).
    rng = random.Random(5)
    votes = []
    for i in range(1000):
        for voter in ("ana", "bob", "cy"):
            left, right = rng.sample([f"{i}-x", f"{i}-y"], 2)
            labels = [left, right, "tie", "both_bad"] if no_preference else [left, right]
            votes.append(Judgement(f"i{i}", voter, rng.choice(labels), left, right))
    result = pair_alpha(votes)
    assert result.alpha is not None and abs(result.alpha) < 0.1
    assert (result.n_items, result.n_values) == (1000, 3000)
    if not no_preference:
        raw = krippendorff_alpha_nominal({item: [j.label for j in g] for item, g in group_by_item(votes).items()})
        assert raw.alpha is not None and raw.alpha > 0.4


def test_pair_units_are_about_the_response_not_the_side() -> None:
    votes = [
        vote("i1", "ana", "p", "p", "q"), vote("i1", "bob", "p", "q", "p"),  # same response, opposite sides
        vote("i2", "ana", "z", "y", "z"), vote("i2", "bob", "z", "z", "y"), vote("i2", "cy", "tie", "z", "y"),
        vote("i3", "ana", "both_bad"),
    ]
    assert pair_units(votes) == {
        "i1": ["first_wins", "first_wins"],
        "i2": ["second_wins", "second_wins", "tie"],
        "i3": ["both_bad"],
    }
    result = pair_alpha(votes[:4])
    assert result.alpha == 1.0 and (result.n_items, result.n_values) == (2, 4)


@pytest.mark.parametrize(("units", "reason", "n_items", "n_values"), [
    ({}, "no pairable values", 0, 0),
    ({"u1": ["a"], "u2": ["b"], "u3": []}, "no pairable values", 0, 0),
    ({"u1": ["a", "a"], "u2": ["a", "a", "a"], "u3": ["b"]}, "no variation", 2, 5),
])
def test_alpha_undefined_cases_return_none_with_a_reason(
    units: dict[str, list[str]], reason: str, n_items: int, n_values: int
) -> None:
    result = krippendorff_alpha_nominal(units)
    assert result.alpha is None
    assert result.reason == reason
    assert (result.n_items, result.n_values) == (n_items, n_values)


# ----------------------------------------------------------------------------------------- majority and disputes

MAJORITY_SET = [
    # i1: 3 × p, 1 × q, on both display orders. ana/bob/cy agree with the others' p; dee does not.
    vote("i1", "ana", "p"), vote("i1", "bob", "p", "q", "p"), vote("i1", "cy", "p"), vote("i1", "dee", "q", "q", "p"),
    # i2: p, q, tie: each voter's two others split 1–1, no strict majority → skipped for everyone.
    vote("i2", "ana", "p"), vote("i2", "bob", "q"), vote("i2", "cy", "tie"),
    # i3: tie ×3, q: the others' majority is tie (2 of 3) for ana/bob/dee, tie (3 of 3) against cy's q.
    vote("i3", "ana", "tie"), vote("i3", "bob", "tie"), vote("i3", "cy", "q"), vote("i3", "dee", "tie"),
    # i4: only 2 votes, one other voter each → not counted; eve and fay still listed.
    vote("i4", "eve", "p"), vote("i4", "fay", "q"),
]


def test_agreement_with_majority_of_the_other_voters() -> None:
    assert agreement_with_majority(MAJORITY_SET) == {
        "ana": (2, 2), "bob": (2, 2), "cy": (1, 2), "dee": (1, 2), "eve": (0, 0), "fay": (0, 0),
    }
    assert agreement_with_majority(list(reversed(MAJORITY_SET))) == agreement_with_majority(MAJORITY_SET)


def test_most_disputed_ranks_by_disagreement_then_votes_then_id() -> None:
    votes = [
        *MAJORITY_SET,
        vote("i5", "ana", "p"), vote("i5", "bob", "q"), vote("i5", "cy", "p"), vote("i5", "dee", "q"),  # 2–2 of 4
        vote("i6", "ana", "p"), vote("i6", "bob", "p"),  # unanimous
        vote("i7", "ana", "q"),  # a single vote: left out
    ]
    disputes = most_disputed(votes)
    assert [(d.item, d.n_votes, d.disagreement) for d in disputes] == [
        ("i2", 3, pytest.approx(2 / 3)),
        ("i5", 4, 0.5),  # same disagreement as i4, more votes first
        ("i4", 2, 0.5),
        ("i1", 4, 0.25),
        ("i3", 4, 0.25),
        ("i6", 2, 0.0),
    ]
    assert disputes[0].counts == (("p", 1), ("q", 1), ("tie", 1))
    assert disputes[3].counts == (("p", 3), ("q", 1))
    assert [d.item for d in most_disputed(votes, top=2)] == ["i2", "i5"]


def test_one_vote_per_voter_and_item_is_enforced() -> None:
    votes = [vote("i1", "ana", "p"), vote("i1", "ana", "q"), vote("i1", "bob", "q")]
    with pytest.raises(ValueError, match="voted more than once"):
        agreement_with_majority(votes)
    assert latest_per_voter(votes) == [vote("i1", "ana", "q"), vote("i1", "bob", "q")]
    with pytest.raises(ValueError, match="different response pairs"):
        group_by_item([vote("i1", "ana", "p"), vote("i1", "bob", "r", "r", "q")])


def test_judgement_validation() -> None:
    with pytest.raises(ValueError, match="neither shown response"):
        vote("i1", "ana", "a")
    with pytest.raises(ValueError, match="same response"):
        vote("i1", "ana", "p", "p", "p")
    with pytest.raises(ValueError, match="may not be"):
        vote("i1", "ana", "p", "p", "tie")
    with pytest.raises(ValueError, match="repeats"):
        Ranking("i1", "ana", ("a", "b", "a"))


# ----------------------------------------------------------------------------------------- position bias


def test_wilson_interval_matches_hand_values() -> None:
    # 7/10, z = 1.96: center = (0.7 + 0.19207)/1.38415 = 0.64449, half = 1.41603·√0.030604 = 0.24772.
    low, high = wilson_interval(7, 10)
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(1, 0)


def test_position_bias_detects_a_left_bias() -> None:
    report = position_bias(simulate(2000, 0.65, seed=1, n_ties=300))
    stats = report.overall
    assert stats.decided == 2000  # the 300 ties are excluded
    assert stats.rate is not None and stats.ci_low is not None and stats.ci_high is not None
    assert stats.ci_low <= stats.rate <= stats.ci_high
    assert stats.ci_low > 0.5  # the bias is detected
    assert stats.ci_low <= 0.65 <= stats.ci_high
    assert stats.ci_high - stats.ci_low == pytest.approx(2 * 1.96 * (0.65 * 0.35 / 2000) ** 0.5, abs=0.003)


def test_position_bias_unbiased_interval_contains_one_half_and_splits_by_voter() -> None:
    votes = simulate(2000, 0.5, seed=2, voter="fair") + simulate(500, 0.8, seed=4, voter="lefty")
    report = position_bias(votes)
    fair, lefty = report.by_voter["fair"], report.by_voter["lefty"]
    assert fair.ci_low is not None and fair.ci_high is not None and fair.ci_low < 0.5 < fair.ci_high
    assert lefty.ci_low is not None and lefty.ci_low > 0.5
    assert report.overall.left_wins == fair.left_wins + lefty.left_wins
    assert report.overall.decided == 2500


def test_position_bias_counts_exactly_and_handles_no_decided_votes() -> None:
    votes = [vote("i1", "ana", "p", "p", "q"), vote("i2", "ana", "p", "q", "p"), vote("i3", "ana", "q", "q", "p"),
             vote("i4", "bob", "tie"), vote("i5", "bob", "both_bad")]
    report = position_bias(votes)
    assert report.by_voter["ana"] == position_bias_stats(2, 3)
    assert (report.by_voter["ana"].left_wins, report.by_voter["ana"].decided) == (2, 3)
    assert report.by_voter["bob"] == position_bias_stats(0, 0)
    assert report.by_voter["bob"].rate is None and report.by_voter["bob"].ci_low is None
    assert report.overall.rate == pytest.approx(2 / 3)


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
