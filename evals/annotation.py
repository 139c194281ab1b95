"""Queue votes as the inputs of `evals.agreement`: agreement reports, and votes merged for export.

A queue vote names its prompt (`Vote.item`) and stores its responses in the order shown; a set
shows each model once per prompt, so the model names the response. Then:

* a pair vote is one `Judgement`: label = the winning model, "tie" or "both_bad"; left = the model
  shown first (slot 0);
* a vote on k > 2 responses becomes one `Judgement` per pair of responses, item "<name> (<model> vs
  <model>)", won by the one ranked higher ("All flawed", stored as both_bad, is both_bad on every
  pair; left = the one shown earlier). Agreement and position bias read these; merging reads the
  whole rankings.

Votes cast in the playground (no `item`) are about no shared prompt: they are left out of the
agreement numbers and pass through a merge unchanged.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.agreement import (
    BOTH_BAD,
    AlphaResult,
    Dispute,
    Judgement,
    PositionBiasReport,
    Ranking,
    TiePolicy,
    agreement_with_majority,
    latest_per_voter,
    merge_pair_votes,
    merge_rankings,
    merge_rule_metadata,
    most_disputed,
    pair_alpha,
    position_bias,
)
from playground.data.votes import Response, Vote


@dataclass(frozen=True)
class AgreementReport:
    votes: int  # queue votes the numbers are based on
    alpha: AlphaResult  # Krippendorff's nominal alpha; `alpha.n_items` items had ≥ 2 votes
    by_voter: dict[str, tuple[int, int]]  # voter → (agrees with the others' majority, items counted)
    disputed: list[Dispute]  # most disagreement first
    position: PositionBiasReport  # left-win rate overall and per voter, 95 % Wilson intervals


@dataclass(frozen=True)
class Merged:
    votes: list[Vote]  # playground votes as they were, and one vote per merged queue item (none if dropped)
    metadata: dict[str, Any]  # the merge rule and what it did, recorded next to an export


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
    """One `Judgement` per pair of the vote's responses (one for a pair vote)."""
    models = [r.model for r in vote.responses]
    if len(models) == 2:
        return [Judgement(item, vote.voter, _pair_label(vote, 0, 1), models[0], models[1])]
    return [Judgement(f"{item} ({' vs '.join(sorted((models[i], models[j])))})", vote.voter,
                      _pair_label(vote, i, j), models[i], models[j])
            for i in range(len(models)) for j in range(i + 1, len(models))]


def judgements(votes: Sequence[Vote], names: Mapping[int, str] | None = None) -> list[Judgement]:
    """The judgements of every queue vote, in vote order; items named by `names` (prompt id → name,
    e.g. the prompt's ref within its set), else by the prompt id."""
    return [j for v in votes if v.item is not None for j in vote_judgements(v, _item_name(v, names))]


def agreement_report(votes: Sequence[Vote], names: Mapping[int, str] | None = None, top: int = 10
                     ) -> AgreementReport:
    """Agreement between voters on the queue votes of one prompt set.

    Alpha, agreement with the majority and the disputed items count each voter once per item (their
    latest vote); position bias counts every vote, as each was a look at the screen.
    """
    every = judgements(votes, names)
    latest = latest_per_voter(every)
    return AgreementReport(
        votes=sum(v.item is not None for v in votes),
        alpha=pair_alpha(latest),
        by_voter=agreement_with_majority(latest),
        disputed=most_disputed(latest, top),
        position=position_bias(every),
    )


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
