"""Agreement statistics for items judged by several voters: Krippendorff's α, agreement with the
majority, the most disputed items, position bias, Wilson intervals, and a judge's agreement with
the human majority (Cohen's κ).

The inputs are the engine's `Judgement`s (`playground.data.merge`, where the votes of one item are
also merged for export): a label names the winning response id, "tie" or "both_bad", never a side,
so agreement is measured on *which response* won. Two voters agree only when they give the same one
of the four categories "X wins", "Y wins", "tie", "both_bad".

A ranking of k responses is k(k−1)/2 pair judgements that share the vote's id; they are not
independent. Statistics that count votes per item (α, majority, disputes) take one pair item at a
time, where one vote gives one judgement; position bias counts pairs, and says so (`n_votes`,
`note`) when some came from one vote.

All functions are pure: they take plain sequences and return new values. One voter may judge an
item once; a second judgement of the same item by the same voter is a `ValueError` (pick one first,
e.g. with `latest_per_voter`), because counting it twice would weigh that voter double.
"""

import json
import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from playground.core.chat import Message
from playground.data.merge import NO_PREFERENCE, TIE, Judgement, Ranking, check_pair_group, strict_top
from playground.data.votes import ARENA_A, ARENA_B, Vote, to_arena_rows

# Canonical categories for alpha across items (see `pair_units`): the response with the
# lexicographically smaller id is "first", whatever side it was shown on.
FIRST_WINS = "first_wins"
SECOND_WINS = "second_wins"
Z_95 = 1.959963984540054  # Φ⁻¹(0.975), the two-sided 95 % normal quantile

_Vote = TypeVar("_Vote", Judgement, Ranking)


# --------------------------------------------------------------------------------------------- grouping


def latest_per_voter(votes: Iterable[_Vote]) -> list[_Vote]:
    """Keep each voter's last vote per item (input order), in the order the kept votes came."""
    last: dict[tuple[str, str], int] = {}
    listed = list(votes)
    for index, vote in enumerate(listed):
        last[(vote.item, vote.voter)] = index
    return [vote for index, vote in enumerate(listed) if last[(vote.item, vote.voter)] == index]


def group_by_item(judgements: Iterable[Judgement]) -> dict[str, list[Judgement]]:
    """Judgements by item id, checking one vote per voter and one response pair per item.

    Raises ValueError when a voter judged an item twice or an item's judgements name different pairs.
    """
    groups: dict[str, list[Judgement]] = defaultdict(list)
    for judgement in judgements:
        groups[judgement.item].append(judgement)
    for item, group in groups.items():
        check_pair_group(item, group)
    return dict(groups)


# --------------------------------------------------------------------------------------------- alpha


@dataclass(frozen=True)
class AlphaResult:
    """Krippendorff's alpha with what it was computed on.

    `alpha` is None when it is undefined, and `reason` then says why: "no pairable values" (no unit
    has ≥ 2 values) or "no variation" (every pairable value is the same category, so D_e = 0 and
    α = 1 − 0/0; perfect agreement is then indistinguishable from a constant answer).
    """

    alpha: float | None
    n_items: int  # units with ≥ 2 values, the only ones that enter α
    n_values: int  # pairable values n: all values in those units
    observed_disagreement: float | None  # D_o
    expected_disagreement: float | None  # D_e
    reason: str | None = None


def coincidence_matrix(units: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], float]:
    """Krippendorff's coincidence matrix o_ck as a sparse dict of its non-zero cells.

        o_ck = Σ_u (number of ordered pairs (c, k) of values from different coders in unit u) / (m_u − 1)

    where the pair count is n_uc·n_uk for c ≠ k and n_uc(n_uc − 1) for c = k. Units with fewer than
    2 values add nothing. Sparse because per-item response ids can make thousands of categories, of
    which each unit touches only a few.
    """
    matrix: dict[tuple[str, str], float] = defaultdict(float)
    for values in units.values():
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, n_uc in counts.items():
            for k, n_uk in counts.items():
                pairs = n_uc * (n_uc - 1) if c == k else n_uc * n_uk
                if pairs:
                    matrix[(c, k)] += pairs / (m - 1)
    return dict(matrix)


def krippendorff_alpha_nominal(units: Mapping[str, Sequence[str]]) -> AlphaResult:
    """Krippendorff's alpha for nominal data through the coincidence matrix.

    `units` maps a unit (item) id to the values its coders gave (one per coder; missing ones left
    out). Units with fewer than 2 values cannot be paired and are dropped. For each remaining unit u
    with m_u values, every ordered pair of values from different coders adds 1/(m_u − 1) to the
    coincidence o_ck of their categories, so each unit contributes m_u in total. With
    n_c = Σ_k o_ck and n = Σ_c n_c (the pairable values):

        D_o = (1/n) Σ_c Σ_{k≠c} o_ck
        D_e = (1/(n(n−1))) Σ_c Σ_{k≠c} n_c n_k
        α   = 1 − D_o / D_e

    α = 1 is perfect agreement, α ≈ 0 agreement at chance level, α < 0 systematic disagreement.
    Perfect agreement with ≥ 2 categories used gives D_o = 0 and α = 1.0 exactly.
    """
    pairable = {unit: values for unit, values in units.items() if len(values) >= 2}
    if not pairable:
        return AlphaResult(None, 0, 0, None, None, reason="no pairable values")
    coincidences = coincidence_matrix(pairable)
    n_c: Counter[str] = Counter()
    for (c, _), o_ck in coincidences.items():
        n_c[c] += o_ck
    n = sum(n_c.values())
    observed = sum(o_ck for (c, k), o_ck in coincidences.items() if c != k) / n
    # Σ_c Σ_{k≠c} n_c n_k = n² − Σ_c n_c², without forming the categories × categories products.
    expected = (n * n - sum(v * v for v in n_c.values())) / (n * (n - 1))
    n_items, n_values = len(pairable), sum(len(v) for v in pairable.values())
    if expected == 0.0:
        return AlphaResult(None, n_items, n_values, observed, expected, reason="no variation")
    return AlphaResult(1.0 - observed / expected, n_items, n_values, observed, expected)


def pair_units(judgements: Iterable[Judgement]) -> dict[str, list[str]]:
    """Alpha units from pair judgements, in categories that mean the same thing on every item.

    A label names a response id, and ids often differ between items (each item has its own
    responses). Used raw, every item would bring its own categories, the pooled expected
    disagreement D_e would approach 1 and α would look high even for random votes. So each label
    becomes "first_wins" (the response with the smaller id won), "second_wins", "tie" or
    "both_bad": still about which response won, never about the side it was shown on. When the ids
    are model names compared in the same pair on every item this equals using the model names.
    """
    units: dict[str, list[str]] = {}
    for item, group in group_by_item(judgements).items():
        first, _ = group[0].responses
        units[item] = [j.label if j.label in NO_PREFERENCE else FIRST_WINS if j.label == first else SECOND_WINS
                       for j in group]
    return units


def pair_alpha(judgements: Iterable[Judgement]) -> AlphaResult:
    """Krippendorff's nominal alpha of pair judgements over the categories of `pair_units`."""
    return krippendorff_alpha_nominal(pair_units(judgements))


# --------------------------------------------------------------------------------------------- majority


def agreement_with_majority(judgements: Iterable[Judgement]) -> dict[str, tuple[int, int]]:
    """Per voter, (agree, total): how often the voter's label equals the majority of the OTHER voters.

    An item counts for a voter when at least 2 other voters judged it (so ≥ 3 votes in all: with a
    single other voter this would be plain pairwise agreement) and the others' most common label has
    a strict majority, count > (number of others)/2; otherwise the others have no verdict to agree
    with and the item is skipped for that voter. Labels are compared as given (winning response id,
    "tie", "both_bad"), so the side a response was shown on does not matter. Every voter appears,
    with (0, 0) when none of their items counts.
    """
    result: dict[str, tuple[int, int]] = {}
    for group in group_by_item(judgements).values():
        for judgement in group:
            agree, total = result.get(judgement.voter, (0, 0))
            others = Counter(j.label for j in group if j.voter != judgement.voter)
            n_others = sum(others.values())
            if n_others >= 2:
                label, count = strict_top(others)
                if label is not None and 2 * count > n_others:
                    agree, total = agree + (judgement.label == label), total + 1
            result[judgement.voter] = (agree, total)
    return dict(sorted(result.items()))


# --------------------------------------------------------------------------------------------- disputes


@dataclass(frozen=True)
class Dispute:
    """An item with its vote counts; disagreement = 1 − (votes for the modal label)/(votes)."""

    item: str
    n_votes: int
    disagreement: float
    counts: tuple[tuple[str, int], ...]  # (label, votes), most votes first, then by label


def most_disputed(judgements: Iterable[Judgement], top: int = 10) -> list[Dispute]:
    """The `top` items with the most disagreement, 1 − max_c n_c / n over the item's labels.

    Items with a single vote cannot be disputed and are left out. Ties in disagreement go to the
    item with more votes (the same split among more voters is better evidence), then by item id.
    """
    if top < 0:
        raise ValueError(f"top must be ≥ 0, got {top}")
    disputes = []
    for item, group in group_by_item(judgements).items():
        if len(group) < 2:
            continue
        counts = tuple(sorted(Counter(j.label for j in group).items(), key=lambda kv: (-kv[1], kv[0])))
        disputes.append(Dispute(item, len(group), 1.0 - counts[0][1] / len(group), counts))
    disputes.sort(key=lambda d: (-d.disagreement, -d.n_votes, d.item))
    return disputes[:top]


# --------------------------------------------------------------------------------------------- position bias


@dataclass(frozen=True)
class PositionBias:
    """How often the left response won among decided pairs, with a 95 % Wilson score interval.

    Under a random left/right order and no position bias the rate is 0.5. With no decided pair the
    rate and the interval are None (undefined, and None keeps the value JSON-safe). The interval
    treats the `decided` pairs as independent; a ranking gives several pairs from one look at the
    screen, so when they came from fewer votes (`n_votes` < `decided`) `note` says the interval is
    too narrow.
    """

    left_wins: int
    decided: int  # pairs that picked a side (tie and both_bad excluded)
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    n_votes: int  # the votes those decided pairs came from
    note: str | None  # see `dependent_pairs_note`


@dataclass(frozen=True)
class PositionBiasReport:
    overall: PositionBias
    by_voter: dict[str, PositionBias]


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p̂ = successes/n:

        center = (p̂ + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · √(p̂(1 − p̂)/n + z²/(4n²))

    Unlike p̂ ± z√(p̂(1−p̂)/n) it stays inside [0, 1] and keeps its coverage for small n or p̂ near 0/1.
    It assumes n independent trials.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 ≤ successes ≤ n and n > 0, got {successes}/{n}")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def dependent_pairs_note(n_pairs: int, n_votes: int) -> str | None:
    """What to say next to a Wilson interval over `n_pairs` pairs that came from `n_votes` votes:
    nothing when each vote gave one pair; otherwise that the interval is too narrow (the pairs of one
    ranking are not independent trials, so the effective sample is between n_votes and n_pairs)."""
    if n_votes >= n_pairs:
        return None
    return (f"{n_pairs} pairs from {n_votes} votes: pairs from rankings are not independent; "
            "interval too narrow")


def count_votes(vote_ids: Iterable[Hashable | None]) -> int:
    """Distinct votes among items tagged with the vote they came from; None is a vote of its own."""
    seen: set[Hashable] = set()
    anonymous = 0
    for vote_id in vote_ids:
        if vote_id is None:
            anonymous += 1
        else:
            seen.add(vote_id)
    return len(seen) + anonymous


def position_bias_stats(left_wins: int, decided: int, n_votes: int | None = None) -> PositionBias:
    """The left-win rate left_wins/decided and its 95 % Wilson interval (None when decided = 0), from
    `n_votes` votes (default: one per decided pair)."""
    n_votes = decided if n_votes is None else n_votes
    note = dependent_pairs_note(decided, n_votes)
    if decided == 0:
        return PositionBias(left_wins, 0, None, None, None, n_votes, note)
    low, high = wilson_interval(left_wins, decided)
    return PositionBias(left_wins, decided, left_wins / decided, low, high, n_votes, note)


def position_bias(judgements: Iterable[Judgement]) -> PositionBiasReport:
    """Left-win rate over all decided pairs and per voter.

    Each vote counts on its own here (a repeated vote is another look at the screen), so no
    one-vote-per-voter check. Pairs of one ranking share its `vote_id`; `n_votes` counts them once.
    """
    decided: dict[str, list[Judgement]] = defaultdict(list)
    for judgement in judgements:
        picked = decided[judgement.voter]  # every voter appears, even with only ties
        if judgement.left_won is not None:
            picked.append(judgement)

    def stats(group: Sequence[Judgement]) -> PositionBias:
        return position_bias_stats(sum(bool(j.left_won) for j in group), len(group),
                                   count_votes(j.vote_id for j in group))

    overall = stats([j for group in decided.values() for j in group])
    return PositionBiasReport(overall, {voter: stats(decided[voter]) for voter in sorted(decided)})


# --------------------------------------------------------------------------------------------- judge vs humans


@dataclass(frozen=True)
class KappaResult:
    """Cohen's κ of two raters over the same n items.

        p_o = (1/n) Σ_i [a_i = b_i]               observed agreement
        p_e = Σ_c (n_c^a / n)(n_c^b / n)          agreement expected from the two raters' label shares
        κ   = (p_o − p_e) / (1 − p_e)

    κ = 1 is perfect agreement, 0 agreement at chance level given the two label distributions, < 0
    worse than chance. `kappa` is None (undefined) when p_e = 1 (both raters always give the one same
    label) or n = 0. The interval is κ ± z·SE with Cohen's (1960) large-sample SE,
    SE = √(p_o(1 − p_o) / (n(1 − p_e)²)), clipped to [−1, 1]: rough for small n.
    """

    n: int
    observed: float | None  # p_o
    expected: float | None  # p_e
    kappa: float | None
    ci_low: float | None
    ci_high: float | None


def cohen_kappa(labels_a: Sequence[str], labels_b: Sequence[str], z: float = Z_95) -> KappaResult:
    """Cohen's κ (see `KappaResult`) of two equally long label sequences, item i rated a_i and b_i."""
    if len(labels_a) != len(labels_b):
        raise ValueError(f"{len(labels_a)} labels against {len(labels_b)}: κ needs one label per item from each")
    n = len(labels_a)
    if n == 0:
        return KappaResult(0, None, None, None, None, None)
    observed = sum(a == b for a, b in zip(labels_a, labels_b, strict=True)) / n
    shares_a, shares_b = Counter(labels_a), Counter(labels_b)
    expected = sum(count * shares_b[label] for label, count in shares_a.items()) / (n * n)
    if expected == 1.0:
        return KappaResult(n, observed, expected, None, None, None)
    kappa = (observed - expected) / (1.0 - expected)
    half = z * math.sqrt(observed * (1.0 - observed) / n) / (1.0 - expected)
    return KappaResult(n, observed, expected, kappa, max(-1.0, kappa - half), min(1.0, kappa + half))


@dataclass(frozen=True)
class JudgeHumanAgreement:
    """How often a judge's verdict equals the human majority, over (prompt, model pair) units that
    have both (`judge_human_agreement`).

    `agreement` = agree/n with its 95 % Wilson interval; `kappa` is Cohen's κ on the labels
    "first model wins", "second model wins", "tie" (both-bad counts as a tie), so agreement that the
    label shares alone would give scores 0. None where undefined (n = 0; κ also when p_e = 1).
    `no_verdict` counts units with human votes and judge battles where the humans (or the judge's
    battles from several runs) have no strict plurality; they are left out of n.
    """

    n: int
    agree: int
    agreement: float | None
    ci_low: float | None
    ci_high: float | None
    kappa: KappaResult
    no_verdict: int


def _unit_labels(rows: Iterable[tuple[Sequence[Message], Mapping[str, Any]]]
                 ) -> dict[tuple[str, str, str], Counter[str]]:
    """Arena battle rows (with the prompt they answer) counted by unit (prompt, first model, second
    model; models sorted, so the side shown does not matter) and label FIRST_WINS, SECOND_WINS or
    "tie" (both-bad included). Rows of one model against itself say nothing and are skipped."""
    units: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for prompt, row in rows:
        model_a, model_b, winner = row["model_a"], row["model_b"], row["winner"]
        if model_a == model_b:
            continue
        first, second = sorted((model_a, model_b))
        won = model_a if winner == ARENA_A else model_b if winner == ARENA_B else None
        label = TIE if won is None else FIRST_WINS if won == first else SECOND_WINS
        units[(json.dumps(list(prompt), sort_keys=True), first, second)][label] += 1
    return units


def judge_human_agreement(votes: Iterable[Vote], judge_battles: Iterable[Mapping[str, Any]]) -> JudgeHumanAgreement:
    """Agreement of a judge with the human majority (`JudgeHumanAgreement`).

    `votes`: stored human votes (`store.votes.list()`; a ranking gives each of its pairs); `judge_battles`:
    one judge's stored battles as rows (`store.judges.list(name)`, as dicts: prompt, model_a, model_b, winner).
    Models are compared by their rated names, as the leaderboard does. A unit is one prompt (its
    messages, exactly) and one pair of models; the human verdict is the strict plurality of the
    humans' labels there, the judge's the strict plurality of its battles there (one per run).
    """
    human = _unit_labels((vote.prompt, row) for vote in votes for row in to_arena_rows([vote], rated=True))
    judge = _unit_labels((battle["prompt"], battle) for battle in judge_battles)
    human_labels, judge_labels, no_verdict = [], [], 0
    for unit in sorted(human.keys() & judge.keys()):
        human_label, _ = strict_top(human[unit])
        judge_label, _ = strict_top(judge[unit])
        if human_label is None or judge_label is None:
            no_verdict += 1
            continue
        human_labels.append(human_label)
        judge_labels.append(judge_label)
    kappa = cohen_kappa(judge_labels, human_labels)
    n, agree = kappa.n, sum(j == h for j, h in zip(judge_labels, human_labels, strict=True))
    if n == 0:
        return JudgeHumanAgreement(0, 0, None, None, None, kappa, no_verdict)
    low, high = wilson_interval(agree, n)
    return JudgeHumanAgreement(n, agree, agree / n, low, high, kappa, no_verdict)
