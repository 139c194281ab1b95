"""Win rates against a baseline, with intervals and the length confounder beside them.

A model's win rate against a baseline over the battles between the two is
    w = (wins + ½·ties) / n,
both-bad counting as a tie. The 95% interval is Wilson's score interval on (wins + ½·ties) out of
n: exact for no ties, a close approximation with them (a tie is half a success). Mean response
length (characters) is reported next to it because longer answers win more often with human and
model judges alike: a win rate that rises with length alone is not progress.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from evals.agreement import wilson_interval

TIES = ("tie", "tie (bothbad)")


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


def win_rate(battles: Sequence[Mapping[str, Any]], model: str, baseline: str) -> WinRate:
    """`model`'s win rate against `baseline` over their battles (either side)."""
    wins = losses = ties = 0
    own, other = [], []
    for b in battles:
        if {b["model_a"], b["model_b"]} != {model, baseline} or model == baseline:
            continue
        side = "a" if b["model_a"] == model else "b"
        if b["winner"] in TIES:
            ties += 1
        elif b["winner"] == f"model_{side}":
            wins += 1
        else:
            losses += 1
        if "len_a" in b:
            own.append(b[f"len_{side}"])
            other.append(b["len_b" if side == "a" else "len_a"])
    n = wins + losses + ties
    if n == 0:
        return WinRate(model, baseline, 0, 0, 0, 0, None, None, None, None, None)
    low, high = wilson_interval(wins + 0.5 * ties, n)
    return WinRate(model, baseline, n, wins, losses, ties, (wins + 0.5 * ties) / n, low, high,
                   _mean(own), _mean(other))


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
