"""Several voters' votes on one queue item merged into one, and the judged-item types they merge.

An *item* is one prompt with a fixed set of responses, each named by a response id (a model name or
any other id unique within the item). Several voters judge the same item:

* a pair (k = 2) gives a `Judgement`: the winning response id, "tie" or "both_bad", plus which
  response was shown on the left (position 0) and which on the right (position 1);
* k ≥ 2 responses ranked best first give a `Ranking`.

Every voter sees the responses in a random order, so a label names a response id, never a side.
The nominal categories of a pair are "X wins", "Y wins", "tie" and "both_bad": a tie ("equally
good") and both-bad ("neither is acceptable") are two categories of their own.

A queue vote (`playground.data.votes.Vote` with an `item`) becomes judgements here (`vote_judgements`):
a pair vote is one `Judgement`; a vote on k > 2 responses is one `Judgement` per pair of responses,
item "<name> (<model> vs <model>)", won by the one ranked higher ("All flawed", stored as both_bad,
is both_bad on every pair; left = the one shown earlier). `merge_votes` then turns every item's
votes into one vote for export or training. The agreement statistics (`evals.agreement`) read the
same types; this module is the engine's part and imports nothing from `evals`.

One voter may judge an item once; a second judgement of the same item by the same voter is a
`ValueError`, because counting it twice would weigh that voter double.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from playground.data.votes import Response, Vote

TIE = "tie"
BOTH_BAD = "both_bad"
NO_PREFERENCE = (TIE, BOTH_BAD)
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
    # The stored vote it came from: the k(k−1)/2 judgements of one ranking share it, so statistics
    # can tell pairs from independent votes. None: a vote of its own.
    vote_id: int | None = None

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


def check_pair_group(item: str, group: Sequence[Judgement]) -> None:
    """Raise ValueError unless one item's judgements name one response pair and each voter once."""
    pairs = {j.responses for j in group}
    if len(pairs) > 1:
        raise ValueError(f"item {item!r} is judged on different response pairs: {sorted(pairs)}")
    _check_one_vote_per_voter(item, [j.voter for j in group])


def _check_one_vote_per_voter(item: str, voters: Sequence[str]) -> None:
    repeated = sorted(v for v, n in Counter(voters).items() if n > 1)
    if repeated:
        raise ValueError(f"item {item!r}: voter(s) {repeated} voted more than once (see latest_per_voter)")


def strict_top(counts: Counter[str]) -> tuple[str | None, int]:
    """The label with strictly the most votes and its count; (None, count) when the top is shared."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return None, ranked[0][1]
    return ranked[0]


# --------------------------------------------------------------------------------------------- votes → judgements


def _item_name(vote: Vote, names: Mapping[int, str] | None) -> str:
    assert vote.item is not None
    return names.get(vote.item, str(vote.item)) if names is not None else str(vote.item)


def _pair_label(vote: Vote, i: int, j: int) -> str:
    """Who won between the responses in slots i and j: a model name, "tie" or "both_bad"."""
    if vote.outcome in ("a", "b"):
        return vote.responses["ab".index(vote.outcome)].model
    if vote.outcome == "ranking":
        assert vote.ranking is not None
        return vote.responses[min(i, j, key=vote.ranking.index)].model
    return vote.outcome  # tie, or both_bad (for k > 2: all flawed, so each pair is both bad)


def vote_judgements(vote: Vote, item: str) -> list[Judgement]:
    """One `Judgement` per pair of the vote's responses (one for a pair vote), all carrying its id."""
    models = [r.model for r in vote.responses]
    if len(models) == 2:
        return [Judgement(item, vote.voter, _pair_label(vote, 0, 1), models[0], models[1], vote.id)]
    return [Judgement(f"{item} ({' vs '.join(sorted((models[i], models[j])))})", vote.voter,
                      _pair_label(vote, i, j), models[i], models[j], vote.id)
            for i in range(len(models)) for j in range(i + 1, len(models))]


def judgements(votes: Sequence[Vote], names: Mapping[int, str] | None = None) -> list[Judgement]:
    """The judgements of every queue vote, in vote order; items named by `names` (prompt id → name,
    e.g. the prompt's ref within its set), else by the prompt id. Playground votes (no item) are
    about no shared prompt and are left out."""
    return [j for v in votes if v.item is not None for j in vote_judgements(v, _item_name(v, names))]


# --------------------------------------------------------------------------------------------- merging items


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


def _one_item(group: Sequence[Judgement] | Sequence[Ranking], what: str, caller: str) -> str:
    """The one item a merge's input is about; a ValueError for an empty group or a mix of items."""
    if not group:
        raise ValueError(f"no {what} to merge")
    items = {g.item for g in group}
    if len(items) > 1:
        raise ValueError(f"{what} of several items given to {caller}: {sorted(items)}")
    return group[0].item


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
    item = _one_item(judgements_for_item, "judgements", "merge_pair_votes")
    check_pair_group(item, judgements_for_item)
    responses = judgements_for_item[0].responses
    counter = Counter(j.label for j in judgements_for_item)
    counts = tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
    top, _ = strict_top(counter)
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
    item = _one_item(rankings_for_item, "rankings", "merge_rankings")
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


# --------------------------------------------------------------------------------------------- merging votes


@dataclass(frozen=True)
class Merged:
    votes: list[Vote]  # playground votes as they were, and one vote per merged queue item (none if dropped)
    metadata: dict[str, Any]  # the merge rule and what it did, recorded next to an export


def _merged_vote(group: Sequence[Vote], responses: tuple[Response, ...], outcome: str,
                 ranking: tuple[int, ...] | None = None) -> Vote:
    first = group[0]
    return Vote(prompt=first.prompt, responses=responses, outcome=outcome, ranking=ranking,
                voter=f"merged: {len(group)} votes",
                settings={**first.settings, "merged_vote_ids": [v.id for v in group]},
                anonymous=all(v.anonymous for v in group), created_at=max(v.created_at for v in group),
                item=first.item, id=first.id)


def _no_preference(group: Sequence[Vote], ties: TiePolicy, outcome: str) -> tuple[str, Vote | None]:
    if ties == "drop":
        return "dropped", None
    by_model = {r.model: r for r in group[0].responses}
    return outcome, _merged_vote(group, tuple(by_model[m] for m in sorted(by_model)), outcome)


def _merge_pair(group: Sequence[Vote], ties: TiePolicy) -> tuple[str, Vote | None]:
    result = merge_pair_votes([vote_judgements(v, str(v.item))[0] for v in group], ties)
    if result.outcome != "pair":
        return _no_preference(group, ties, result.outcome)
    by_model = {r.model: r for r in group[0].responses}
    assert result.chosen is not None and result.rejected is not None
    return "pair", _merged_vote(group, (by_model[result.chosen], by_model[result.rejected]), "a")


def _merge_ranking(group: Sequence[Vote], ties: TiePolicy) -> tuple[str, Vote | None]:
    """Ranked pairs over the rankings; "All flawed" wins only with a strict majority of the votes."""
    ranked = [v for v in group if v.outcome == "ranking"]
    if 2 * (len(group) - len(ranked)) > len(group) or not ranked:
        return _no_preference(group, ties, BOTH_BAD)
    order = merge_rankings([Ranking(str(v.item), v.voter, tuple(v.responses[i].model for i in v.ranking or ()))
                            for v in ranked])
    models = sorted(r.model for r in group[0].responses)
    by_model = {r.model: r for r in group[0].responses}
    return "ranking", _merged_vote(group, tuple(by_model[m] for m in models), "ranking",
                                   tuple(models.index(m) for m in order))


def merge_votes(votes: Sequence[Vote], ties: TiePolicy = "drop") -> Merged:
    """One vote per queue item from everyone's votes on it, in the order items were first voted on.

    Pairs: plurality over (model X wins, model Y wins, tie, both_bad), see `merge_pair_votes`; with
    no strict winner the item is dropped (ties="drop") or kept as a tie / both-bad vote ("keep").
    Rankings: ranked pairs (`merge_rankings`). Each voter counts once per item (their latest vote).
    The merged vote keeps the first vote's id and lists all in `settings["merged_vote_ids"]`.
    Votes cast in the playground (no `item`) pass through unchanged.
    """
    groups: dict[tuple[int, tuple[str, ...]], list[Vote]] = {}
    order: list[Vote | tuple[int, tuple[str, ...]]] = []
    for vote in votes:
        if vote.item is None:
            order.append(vote)
            continue
        key = (vote.item, tuple(sorted(r.model for r in vote.responses)))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(vote)
    outcomes: Counter[str] = Counter()
    merged: list[Vote] = []
    for entry in order:
        if isinstance(entry, Vote):
            merged.append(entry)
            continue
        # Each voter once (their latest): the store refuses a second queue vote, but older data may have one.
        latest = {v.voter: v for v in groups[entry]}
        group = [v for v in groups[entry] if latest[v.voter] is v]
        outcome, vote = (_merge_pair if len(entry[1]) == 2 else _merge_ranking)(group, ties)
        outcomes[outcome] += 1
        if vote is not None:
            merged.append(vote)
    metadata = {
        "merge": "majority", **merge_rule_metadata(ties),
        "queue_items": len(groups), "queue_votes": sum(len(g) for g in groups.values()),
        "outcomes": dict(sorted(outcomes.items())),
        "unmerged": "votes cast in the playground (not in a prompt set's queue) are exported as they are",
    }
    return Merged(merged, metadata)
