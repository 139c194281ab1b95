"""Agreement statistics and vote merging for items judged by several voters.

An *item* is one prompt with a fixed set of responses, each named by a response id (a model name or
any other id unique within the item). Several voters judge the same item:

* a pair (k = 2) gives a `Judgement`: the winning response id, "tie" or "both_bad", plus which
  response was shown on the left (position 0) and which on the right (position 1);
* k ≥ 2 responses ranked best first give a `Ranking`.

Every voter sees the two responses in a random left/right order, so agreement is measured on *which
response* won, never on which side: a label names a response id. The nominal categories of a pair
are therefore "X wins", "Y wins", "tie" and "both_bad": a tie ("equally good") and both-bad
("neither is acceptable") are two categories of their own, distinct from each other and from the
two wins, so two voters agree only when they give the same one of the four.

All functions are pure: they take plain sequences and return new values. One voter may judge an
item once; a second judgement of the same item by the same voter is a `ValueError` (pick one first,
e.g. with `latest_per_voter`), because counting it twice would weigh that voter double.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeVar

import numpy as np

TIE = "tie"
BOTH_BAD = "both_bad"
NO_PREFERENCE = (TIE, BOTH_BAD)
# Canonical categories for alpha across items (see `pair_units`): the response with the
# lexicographically smaller id is "first", whatever side it was shown on.
FIRST_WINS = "first_wins"
SECOND_WINS = "second_wins"
Z_95 = 1.959963984540054  # Φ⁻¹(0.975), the two-sided 95 % normal quantile
TiePolicy = Literal["drop", "keep"]
TIE_POLICIES: tuple[TiePolicy, ...] = ("drop", "keep")
PairOutcome = Literal["pair", "tie", "both_bad", "dropped"]

# Read-only, so no caller can change the rule description another export records.
MERGE_RULES: Mapping[str, str] = MappingProxyType({
    "pairs": (
        "plurality over the labels (response X wins, response Y wins, tie, both_bad), one label per voter; "
        "a response with strictly more votes than each other label is chosen over the other response"
    ),
    "pairs_no_preference": (
        "no strict response plurality (a split between the responses, or tie/both_bad at or sharing the top)"
    ),
    "rankings": (
        "ranked pairs (Tideman): pairwise majorities from all voters' full rankings, locked by margin "
        "(strongest first, ties by winner id then loser id) unless a cycle forms; the order is the "
        "topological order of the locked graph, unordered responses by id"
    ),
})


@dataclass(frozen=True)
class Judgement:
    """One voter's verdict on one pair item."""

    item: str  # item id, e.g. the prompt id within a prompt set
    voter: str
    label: str  # the winning response id, "tie" or "both_bad"
    left: str  # response id shown on the left (position 0)
    right: str  # response id shown on the right (position 1)

    def __post_init__(self) -> None:
        for name in ("item", "voter", "label", "left", "right"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"judgement {name} must be a non-empty string, got {value!r}")
        if self.left == self.right:
            raise ValueError(f"item {self.item!r}: left and right are the same response {self.left!r}")
        if self.left in NO_PREFERENCE or self.right in NO_PREFERENCE:
            raise ValueError(f"item {self.item!r}: a response id may not be {TIE!r} or {BOTH_BAD!r}")
        if self.label not in (self.left, self.right, *NO_PREFERENCE):
            raise ValueError(
                f"item {self.item!r}: label {self.label!r} is neither shown response "
                f"({self.left!r}, {self.right!r}) nor {TIE!r}/{BOTH_BAD!r}"
            )

    @property
    def responses(self) -> tuple[str, str]:
        """The two response ids in canonical (sorted) order, independent of the display order."""
        first, second = sorted((self.left, self.right))
        return first, second

    @property
    def left_won(self) -> bool | None:
        """True when the left response won, False when the right one did, None for tie/both_bad."""
        if self.label in NO_PREFERENCE:
            return None
        return self.label == self.left


@dataclass(frozen=True)
class Ranking:
    """One voter's full ranking of an item's responses, best first."""

    item: str
    voter: str
    order: tuple[str, ...]  # response ids, best first

    def __post_init__(self) -> None:
        for name in ("item", "voter"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"ranking {name} must be a non-empty string, got {value!r}")
        if not isinstance(self.order, tuple) or len(self.order) < 2:
            raise ValueError(f"item {self.item!r}: a ranking needs a tuple of at least 2 response ids")
        if any(not isinstance(r, str) or not r for r in self.order):
            raise ValueError(f"item {self.item!r}: response ids must be non-empty strings")
        if len(set(self.order)) != len(self.order):
            raise ValueError(f"item {self.item!r}: ranking {self.order!r} repeats a response")


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
        _check_pair_group(item, group)
    return dict(groups)


def _check_pair_group(item: str, group: Sequence[Judgement]) -> None:
    pairs = {j.responses for j in group}
    if len(pairs) > 1:
        raise ValueError(f"item {item!r} is judged on different response pairs: {sorted(pairs)}")
    _check_one_vote_per_voter(item, [j.voter for j in group])


def _check_one_vote_per_voter(item: str, voters: Sequence[str]) -> None:
    repeated = sorted(v for v, n in Counter(voters).items() if n > 1)
    if repeated:
        raise ValueError(f"item {item!r}: voter(s) {repeated} voted more than once (see latest_per_voter)")


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
                label, count = _strict_top(others)
                if label is not None and 2 * count > n_others:
                    agree, total = agree + (judgement.label == label), total + 1
            result[judgement.voter] = (agree, total)
    return dict(sorted(result.items()))


def _strict_top(counts: Counter[str]) -> tuple[str | None, int]:
    """The label with strictly the most votes and its count; (None, count) when the top is shared."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return None, ranked[0][1]
    return ranked[0]


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
    """How often the left response won among decided votes, with a 95 % Wilson score interval.

    Under a random left/right order and no position bias the rate is 0.5. With no decided vote the
    rate and the interval are None (undefined, and None keeps the value JSON-safe).
    """

    left_wins: int
    decided: int  # votes that picked a side (tie and both_bad excluded)
    rate: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class PositionBiasReport:
    overall: PositionBias
    by_voter: dict[str, PositionBias]


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p̂ = successes/n:

        center = (p̂ + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · √(p̂(1 − p̂)/n + z²/(4n²))

    Unlike p̂ ± z√(p̂(1−p̂)/n) it stays inside [0, 1] and keeps its coverage for small n or p̂ near 0/1.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 ≤ successes ≤ n and n > 0, got {successes}/{n}")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def position_bias_stats(left_wins: int, decided: int) -> PositionBias:
    """The left-win rate left_wins/decided and its 95 % Wilson interval (None when decided = 0)."""
    if decided == 0:
        return PositionBias(left_wins, 0, None, None, None)
    low, high = wilson_interval(left_wins, decided)
    return PositionBias(left_wins, decided, left_wins / decided, low, high)


def position_bias(judgements: Iterable[Judgement]) -> PositionBiasReport:
    """Left-win rate over all decided votes and per voter.

    Each vote counts on its own here (a repeated vote is another look at the screen), so no
    one-vote-per-voter check.
    """
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for judgement in judgements:
        tally = tallies[judgement.voter]  # every voter appears, even with only ties
        if judgement.left_won is not None:
            tally[0] += judgement.left_won
            tally[1] += 1
    overall = position_bias_stats(sum(t[0] for t in tallies.values()), sum(t[1] for t in tallies.values()))
    return PositionBiasReport(overall, {voter: position_bias_stats(*tallies[voter]) for voter in sorted(tallies)})


# --------------------------------------------------------------------------------------------- merging


@dataclass(frozen=True)
class MergeResult:
    """Several voters' judgements of one pair item merged into one export row.

    outcome "pair": `chosen` beat `rejected`. "tie"/"both_bad" (ties="keep" only): no preference,
    `chosen`/`rejected` None. "dropped": no preference and ties="drop".
    """

    item: str
    outcome: PairOutcome
    chosen: str | None
    rejected: str | None
    responses: tuple[str, str]  # the item's two response ids, sorted
    n_votes: int
    counts: tuple[tuple[str, int], ...]  # (label, votes), most votes first, then by label


def merge_pair_votes(judgements_for_item: Sequence[Judgement], ties: TiePolicy = "drop") -> MergeResult:
    """Merge one item's pair judgements by plurality over four labels.

    Every vote is one label: response X wins, response Y wins, tie, or both_bad; tie and both_bad
    count as labels of their own (they are not split between the responses, and are not merged with
    each other).

    * A response whose label has strictly more votes than each of the other three labels is chosen;
      the other response is rejected. (2 X, 1 Y, 1 tie → X; 3 X, 2 Y → X.)
    * Anything else is "no preference": a split at the top between the responses (1 X, 1 Y), a
      tie or both_bad at the top, or a response sharing the top with tie/both_bad (2 X, 2 tie).
      ties="drop" gives outcome "dropped"; ties="keep" gives "both_bad" when both_bad alone has
      the most votes and "tie" otherwise.

    The result depends only on the multiset of labels, not on the input order.
    """
    if ties not in TIE_POLICIES:
        raise ValueError(f"ties must be one of {TIE_POLICIES}, got {ties!r}")
    if not judgements_for_item:
        raise ValueError("no judgements to merge")
    items = {j.item for j in judgements_for_item}
    if len(items) > 1:
        raise ValueError(f"judgements of several items given to merge_pair_votes: {sorted(items)}")
    item = judgements_for_item[0].item
    _check_pair_group(item, judgements_for_item)
    responses = judgements_for_item[0].responses
    counter = Counter(j.label for j in judgements_for_item)
    counts = tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
    top, _ = _strict_top(counter)
    if top in responses:
        rejected = responses[1] if top == responses[0] else responses[0]
        return MergeResult(item, "pair", top, rejected, responses, len(judgements_for_item), counts)
    outcome: PairOutcome = "dropped" if ties == "drop" else BOTH_BAD if top == BOTH_BAD else TIE
    return MergeResult(item, outcome, None, None, responses, len(judgements_for_item), counts)


def merge_rankings(rankings_for_item: Sequence[Ranking]) -> tuple[str, ...]:
    """Merge one item's full rankings into one ranking by ranked pairs (Tideman).

    1. Pairwise majorities: w(a, b) = number of voters ranking a above b. For every pair with
       w(a, b) > w(b, a), a beats b with margin w(a, b) − w(b, a); pairs with equal votes give none.
    2. Sort the victories by margin, strongest first; equal margins by winner id, then loser id,
       so the result never depends on the input order.
    3. Lock each victory a → b in that order unless b already reaches a through locked edges
       (locking it would close a cycle).
    4. Return the topological order of the locked graph, taking the smallest id whenever several
       responses are unbeaten among those left (only happens for pairs with equal votes).

    With one voter every pair is locked and the voter's ranking comes back. In a Condorcet cycle the
    weakest victory is the one skipped.
    """
    if not rankings_for_item:
        raise ValueError("no rankings to merge")
    items = {r.item for r in rankings_for_item}
    if len(items) > 1:
        raise ValueError(f"rankings of several items given to merge_rankings: {sorted(items)}")
    item = rankings_for_item[0].item
    candidates = sorted(rankings_for_item[0].order)
    for ranking in rankings_for_item:
        if sorted(ranking.order) != candidates:
            raise ValueError(f"item {item!r}: rankings cover different responses ({ranking.order!r} vs {candidates})")
    _check_one_vote_per_voter(item, [r.voter for r in rankings_for_item])

    index = {c: i for i, c in enumerate(candidates)}
    wins = np.zeros((len(candidates), len(candidates)), dtype=int)
    for ranking in rankings_for_item:
        positions = [index[c] for c in ranking.order]
        for rank, better in enumerate(positions):
            for worse in positions[rank + 1:]:
                wins[better, worse] += 1

    victories = [(int(wins[a, b] - wins[b, a]), candidates[a], candidates[b])
                 for a in range(len(candidates)) for b in range(len(candidates)) if wins[a, b] > wins[b, a]]
    victories.sort(key=lambda v: (-v[0], v[1], v[2]))
    locked: dict[str, set[str]] = {c: set() for c in candidates}
    for _, winner, loser in victories:
        if not _reaches(locked, loser, winner):
            locked[winner].add(loser)

    # Kahn's algorithm; the sorted pick among unbeaten responses keeps the output deterministic.
    beaten_by = {c: sum(c in losers for losers in locked.values()) for c in candidates}
    order: list[str] = []
    while len(order) < len(candidates):
        current = min(c for c in candidates if beaten_by[c] == 0 and c not in order)
        order.append(current)
        for loser in locked[current]:
            beaten_by[loser] -= 1
    return tuple(order)


def _reaches(edges: Mapping[str, set[str]], start: str, goal: str) -> bool:
    """Whether `goal` can be reached from `start` along `edges` (depth-first search)."""
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in edges[node] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return False


def merge_rule_metadata(ties: TiePolicy) -> dict[str, str]:
    """The merge rules as recorded next to an export, with what happens to no-preference pair items."""
    if ties not in TIE_POLICIES:
        raise ValueError(f"ties must be one of {TIE_POLICIES}, got {ties!r}")
    fate = "dropped" if ties == "drop" else "kept as both_bad when both_bad alone leads, else as tie"
    return {
        "pairs": f"{MERGE_RULES['pairs']}; {MERGE_RULES['pairs_no_preference']}: {fate}",
        "rankings": MERGE_RULES["rankings"],
        "ties": ties,
    }
