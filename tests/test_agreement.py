"""Agreement statistics: exact values on hand-computed and textbook data."""

import random

import pytest

from evals.agreement import (
    agreement_with_majority,
    cohen_kappa,
    coincidence_matrix,
    group_by_item,
    judge_human_agreement,
    krippendorff_alpha_nominal,
    latest_per_voter,
    most_disputed,
    pair_alpha,
    pair_units,
    position_bias,
    position_bias_stats,
    wilson_interval,
)
from evals.battle import Battle
from evals.battles import vote_battles
from playground.data.merge import Judgement
from tests.conftest import make_vote
from tests.test_merge import vote


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


def test_position_bias_counts_the_votes_behind_ranking_pairs() -> None:
    # ana's ranking a > b > c (vote 7) is three decided pairs from one vote, each won by the left one;
    # her pair vote 8 and bob's unsaved vote (no id: a vote of its own) are one pair each.
    ranking = [Judgement(f"i1 ({x} vs {y})", "ana", x, x, y, vote_id=7) for x, y in ("ab", "ac", "bc")]
    pairs = [Judgement("i2", "ana", "p", "p", "q", vote_id=8), vote("i3", "bob", "q")]
    report = position_bias(ranking + pairs)
    assert (report.overall.left_wins, report.overall.decided, report.overall.n_votes) == (4, 5, 3)
    assert report.overall.note == "5 pairs from 3 votes: pairs from rankings are not independent; interval too narrow"
    assert (report.by_voter["ana"].decided, report.by_voter["ana"].n_votes) == (4, 2)
    assert report.by_voter["bob"] == position_bias_stats(0, 1) and report.by_voter["bob"].note is None


# ----------------------------------------------------------------------------------------- judge vs humans


def test_cohen_kappa_textbook_example() -> None:
    # Wikipedia's "Cohen's kappa" example: 50 proposals, both yes 20, A yes B no 5, A no B yes 10, both no 15:
    # p_o = 35/50 = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = (0.7 − 0.5)/(1 − 0.5) = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = cohen_kappa(a, b)
    assert (result.n, result.observed, result.expected) == (50, pytest.approx(0.7), pytest.approx(0.5))
    assert result.kappa == pytest.approx(0.4, abs=1e-12)
    half = 1.959963984540054 * (0.7 * 0.3 / 50) ** 0.5 / 0.5  # Cohen's large-sample SE
    assert (result.ci_low, result.ci_high) == pytest.approx((0.4 - half, 0.4 + half), abs=1e-12)
    assert cohen_kappa(["x"] * 4, ["x"] * 4).kappa is None  # p_e = 1: undefined
    assert cohen_kappa([], []).kappa is None
    assert cohen_kappa(["x", "y"], ["y", "x"]).kappa == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="one label per item"):
        cohen_kappa(["x"], [])


def test_judge_human_agreement_hand_computed() -> None:
    def prompt(n: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Question {n}?"}]

    def fight(n: int, a: str, b: str, winner: str) -> Battle:
        return Battle(a, b, winner, source="judge", prompt=prompt(n))

    votes = [
        make_vote(("x", "y"), "a", prompt=prompt(1)), make_vote(("x", "y"), "a", prompt=prompt(1), voter="bo"),
        make_vote(("y", "x"), "a", prompt=prompt(1), voter="cy"),  # x 2 : y 1, the side shown does not matter
        make_vote(("x", "y"), "tie", prompt=prompt(2)), make_vote(("x", "y"), "both_bad", prompt=prompt(2), voter="bo"),
        make_vote(("x", "y"), "b", prompt=prompt(3)),
        make_vote(("x", "y"), "a", prompt=prompt(4)), make_vote(("x", "y"), "b", prompt=prompt(4), voter="bo"),
        make_vote(("x", "y"), "a", prompt=prompt(5)),  # no judge battle here
        make_vote(("x", "y", "z"), "ranking", ranking=(2, 0, 1), prompt=prompt(7)),  # z > x > y
        make_vote(("policy", "sft"), "a", prompt=prompt(8), rated_as=("sft", "sft")),  # one model twice: no battle
    ]
    judge = [
        fight(1, "y", "x", "model_b"), fight(1, "x", "y", "model_a"),  # two runs, both x
        fight(2, "x", "y", "model_a"), fight(3, "y", "x", "tie (bothbad)"), fight(4, "x", "y", "model_a"),
        fight(6, "x", "y", "model_a"),  # no human vote here
        fight(7, "x", "y", "model_a"), fight(7, "z", "x", "model_b"), fight(7, "y", "z", "model_b"),
        fight(8, "sft", "x", "model_a"),  # no human battle here: the humans' one was sft against itself
    ]
    result = judge_human_agreement(vote_battles(votes), judge)
    # (judge, human) per unit, F/S = the alphabetically first/second model wins, T = tie (both-bad too):
    # 1 (F, F), 2 (F, T), 3 (T, S), 7 x–y (F, F), 7 x–z (F, S), 7 y–z (S, S); 4 has a 1–1 human split.
    assert (result.n, result.agree, result.no_verdict) == (6, 3, 1)
    assert result.agreement == 0.5
    assert (result.ci_low, result.ci_high) == pytest.approx((0.1876, 0.8124), abs=1e-4)  # Wilson, 3 of 6
    # Judge shares F 4/6, S 1/6, T 1/6; human F 2/6, S 3/6, T 1/6: p_e = (8 + 3 + 1)/36 = 1/3,
    # κ = (1/2 − 1/3)/(1 − 1/3) = 1/4.
    assert result.kappa.expected == pytest.approx(1 / 3, abs=1e-12)
    assert result.kappa.kappa == pytest.approx(0.25, abs=1e-12)
    assert (result.kappa.ci_low, result.kappa.ci_high) == pytest.approx((-0.3501, 0.8501), abs=1e-4)
    empty = judge_human_agreement(vote_battles(votes[:3]), judge[5:6])
    assert (empty.n, empty.agreement, empty.kappa.kappa) == (0, None, None)
