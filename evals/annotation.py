"""Agreement between voters on the queue votes of one prompt set.

A queue vote names its prompt (`Vote.item`) and stores its responses in the order shown; a set
shows each model once per prompt, so the model names the response. The votes become pair
judgements as `playground.data.merge.judgements` defines them (a ranking of k: one judgement per
pair, sharing the vote's id), and `evals.agreement` computes the statistics. Votes cast in the
playground (no `item`) are about no shared prompt and are left out. Merging votes for export is
the engine's job (`playground.data.merge.merge_votes`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evals.agreement import (
    AlphaResult,
    Dispute,
    PositionBiasReport,
    agreement_with_majority,
    latest_per_voter,
    most_disputed,
    pair_alpha,
    position_bias,
)
from playground.data.merge import judgements
from playground.data.votes import Vote


@dataclass(frozen=True)
class AgreementReport:
    votes: int  # queue votes the numbers are based on
    alpha: AlphaResult  # Krippendorff's nominal alpha; `alpha.n_items` items had ≥ 2 votes
    by_voter: dict[str, tuple[int, int]]  # voter → (agrees with the others' majority, items counted)
    disputed: list[Dispute]  # most disagreement first
    # Left-win rate overall and per voter, 95 % Wilson intervals over pairs; `n_votes`/`note` say
    # when a ranking's pairs made the interval too narrow.
    position: PositionBiasReport


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
