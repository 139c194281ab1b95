"""Win rates against a baseline, with intervals and the length confounder beside them.

A model's win rate against a baseline over the battles between the two is
    w = (wins + ½·ties) / n,
both-bad counting as a tie (`playground.data.votes.win_score`). The 95% interval is Wilson's score
interval on (wins + ½·ties) out of n: exact for no ties, a close approximation with them (a tie is
half a success). It treats the n battles as independent. A ranking of k responses gives one battle
per pair; when two of the battles counted came from one vote (a ranking that showed the same rated
model twice), `n_votes` < n and `note` says the interval is too narrow. Mean response length
(characters) is reported next to it because longer answers win more often with human and model
judges alike: a win rate that rises with length alone is not progress.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from evals.agreement import count_votes, dependent_pairs_note, wilson_interval
from evals.battles import vote_key
from playground.data.votes import win_score


@dataclass(frozen=True)
class WinRate:
    model: str
    baseline: str
    n: int
    wins: int
    losses: int
    ties: int
    rate: float | None  # None without battles
    ci_low: float | None
    ci_high: float | None
    mean_len: float | None  # the model's mean response length in these battles, characters
    baseline_mean_len: float | None
    n_votes: int  # the votes the n battles came from (`evals.battles.vote_key`)
    note: str | None  # set when n_votes < n: the interval is too narrow


def win_rate(battles: Sequence[Mapping[str, Any]], model: str, baseline: str) -> WinRate:
    """`model`'s win rate against `baseline` over their battles (either side)."""
    scores: list[float] = []  # the model's score in each battle: 1, ½ or 0
    own, other, vote_ids = [], [], []
    for b in battles:
        if {b["model_a"], b["model_b"]} != {model, baseline} or model == baseline:
            continue
        side = "a" if b["model_a"] == model else "b"
        score = win_score(b["winner"]) if side == "a" else 1.0 - win_score(b["winner"])
        scores.append(score)
        vote_ids.append(vote_key(b))
        if "len_a" in b:
            own.append(b[f"len_{side}"])
            other.append(b["len_b" if side == "a" else "len_a"])
    n = len(scores)
    if n == 0:
        return WinRate(model, baseline, 0, 0, 0, 0, None, None, None, None, None, 0, None)
    points = sum(scores)
    low, high = wilson_interval(points, n)
    n_votes = count_votes(vote_ids)
    return WinRate(model, baseline, n, scores.count(1.0), scores.count(0.0), scores.count(0.5), points / n,
                   low, high, _mean(own), _mean(other), n_votes, dependent_pairs_note(n, n_votes))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def models_in(battles: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({b["model_a"] for b in battles} | {b["model_b"] for b in battles})


def win_rate_table(battles: Sequence[Mapping[str, Any]], baseline: str) -> pd.DataFrame:
    """Every other model's win rate against `baseline`, best first."""
    rows = [win_rate(battles, m, baseline) for m in models_in(battles) if m != baseline]
    table = pd.DataFrame([r.__dict__ for r in rows if r.n > 0], columns=list(WinRate.__dataclass_fields__))
    return table.sort_values("rate", ascending=False, ignore_index=True)


def checkpoint_timeline(battles: Sequence[Mapping[str, Any]], checkpoints: Sequence[Mapping[str, Any]],
                        baseline: str = "sft") -> pd.DataFrame:
    """Each checkpoint's win rate against `baseline`, in the order the checkpoints were made
    (`checkpoints` as `Store.checkpoints()` lists them); checkpoints without battles are left out."""
    rows = []
    for c in checkpoints:
        r = win_rate(battles, c["id"], baseline)
        if r.n:
            rows.append({"checkpoint": c["id"], "created_at": c["created_at"], **r.__dict__})
    return pd.DataFrame(rows, columns=["checkpoint", "created_at", *WinRate.__dataclass_fields__])
