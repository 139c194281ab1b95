"""What a ratings run reports: `compute_ratings` puts the Bradley–Terry (or style-controlled) ratings
and their bootstrap intervals, online Elo, each model's record and the pairwise matrices into a
`RatingsResult`, warns where the ratings rest on the ridge prior rather than on data, and
`to_json` writes it out (`playground ratings`, the Dashboard's downloads).

Intervals are the 2.5 and 97.5 percentiles of each model's rating over the bootstrap rounds
(`evals.ratings.bradley_terry`), the anchor fixed at 1000 in every round; `bootstrap=0` means none.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from evals.ratings.bradley_terry import ELO_PER_LOGIT, PairCounts, aggregate, bootstrap_ratings, fit_ratings
from evals.ratings.indexed import IndexedBattles
from evals.ratings.newton import RIDGE, FloatArray, IntArray, sigmoid
from evals.ratings.online_elo import online_elo
from evals.ratings.style import style_controlled_ratings, style_data
from playground.core.errors import PlaygroundError

DEFAULT_ANCHOR = "sft"


@dataclass(frozen=True, eq=False)
class RatingsResult:
    """Everything `compute_ratings` found. DataFrames are indexed by model in leaderboard order
    (rating descending, then name)."""

    anchor: str
    bootstrap: int
    seed: int
    ridge: float
    n_battles: int
    n_votes: int  # the votes the battles came from, the unit the bootstrap resamples
    leaderboard: pd.DataFrame  # rank, rating, ci_low, ci_high, n_battles, wins, losses, ties, online_elo
    battles: pd.DataFrame  # battle counts, symmetric, 0 on the diagonal
    win_fraction: pd.DataFrame  # (wins + ½ ties) of row against column / battles; NaN where they never met
    predicted: pd.DataFrame  # σ((R_row − R_col) ln 10 / 400); ½ on the diagonal, so P + Pᵀ = 1
    online_elo: dict[str, float]
    warnings: tuple[str, ...]
    # With style control: per STYLE_FEATURES (`evals.ratings.style`), its coefficient β (log-odds per
    # typical difference, a minus b; > 0: the answer with more of it wins more often), 95% interval
    # (NaN without bootstrap), and `elo`, β in Elo points. None: plain ratings.
    style: pd.DataFrame | None = None


def _reachable(adjacent: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """reach[i, j]: a path i → … → j exists; repeated squaring, ⌈log₂ M⌉ boolean matrix products."""
    reach = adjacent | np.eye(len(adjacent), dtype=bool)
    for _ in range(max(1, math.ceil(math.log2(len(adjacent))))):
        as_float = reach.astype(np.float64)
        reach = (as_float @ as_float) > 0
    return reach


def _graph_warnings(counts: PairCounts, models: tuple[str, ...], record: pd.DataFrame) -> tuple[str, ...]:
    """Why the ratings may rest on the ridge prior rather than on data (Zermelo's condition: the
    maximum-likelihood ratings exist iff every model reaches every other along 'scored at least
    half a point against' edges)."""
    m = len(models)
    met = np.zeros((m, m), dtype=bool)
    met[counts.i, counts.j] = met[counts.j, counts.i] = True
    groups = {tuple(np.flatnonzero(row)) for row in _reachable(met)}
    if len(groups) > 1:
        listed = "; ".join(", ".join(models[k] for k in g) for g in sorted(groups))
        return (f"the models fall into {len(groups)} groups that never met ({listed}): ratings are comparable "
                "within a group only; between groups the ridge prior alone sets them (each group centred near "
                "the same mean)",)
    scored = np.zeros((m, m), dtype=bool)
    scored[counts.i, counts.j] = counts.w > 0
    scored[counts.j, counts.i] = counts.n - counts.w > 0
    if _reachable(scored).all():
        return ()
    never_lost = [name for name, row in record.iterrows() if row["losses"] == row["ties"] == 0]
    never_won = [name for name, row in record.iterrows() if row["wins"] == row["ties"] == 0]
    named = "; ".join(([f"never lost: {', '.join(never_lost)}"] if never_lost else [])
                      + ([f"never won: {', '.join(never_won)}"] if never_won else []))
    return ("some models never lost (nor tied) against some others" + (f" ({named})" if named else "")
            + ", so maximum likelihood would put them infinitely apart: their gaps are finite only through "
            "the ridge prior, large and unreliable",)


def _record(battles: IndexedBattles) -> pd.DataFrame:
    """n_battles, wins, losses, ties (both-bad included) per model, in `battles.models` order."""
    m = len(battles.models)

    def count(score_a: float) -> IntArray:
        return (np.bincount(battles.a[battles.score_a == score_a], minlength=m)
                + np.bincount(battles.b[battles.score_a == 1.0 - score_a], minlength=m))

    wins, losses, ties = count(1.0), count(0.0), count(0.5)
    return pd.DataFrame({"n_battles": wins + losses + ties, "wins": wins, "losses": losses, "ties": ties},
                        index=pd.Index(battles.models, name="model"))


def compute_ratings(battles: IndexedBattles, bootstrap: int = 1000, anchor: str | None = None, seed: int = 0,
                    ridge: float = RIDGE, style: FloatArray | None = None) -> RatingsResult:
    """Bradley–Terry ratings with `bootstrap` rounds of 95% intervals (0: none), online Elo and the
    pairwise matrices. `anchor` (default "sft" if present, else the alphabetically first model) is
    fixed at 1000. `style` ((N, S) `style_features` of the battles, in order) makes them
    style-controlled: the ratings at equal style, the style coefficients in `RatingsResult.style`."""
    models = battles.models
    if len(models) < 2:
        raise PlaygroundError("ratings need battles between at least 2 models")
    if len(battles) == 0:
        raise PlaygroundError("no battles")
    if bootstrap < 0:
        raise PlaygroundError(f"bootstrap must be a number of rounds ≥ 0 (0: no intervals), got {bootstrap}")
    if not ridge > 0:
        raise PlaygroundError(f"ridge must be > 0 (it keeps a model that never lost finite), got {ridge}")
    if anchor is None:
        anchor = DEFAULT_ANCHOR if DEFAULT_ANCHOR in models else models[0]
    if anchor not in models:
        raise PlaygroundError(f"unknown anchor {anchor!r}; the models are {', '.join(models)}")
    at = models.index(anchor)

    counts = aggregate(battles)
    style_table = None
    if style is None:
        ratings = fit_ratings(counts, at, ridge)
        if bootstrap:
            low, high = np.percentile(bootstrap_ratings(counts, bootstrap, at, seed, ridge), [2.5, 97.5], axis=0)
        else:
            low = high = np.full(len(models), np.nan)
    else:
        ratings, low, high, style_table = style_controlled_ratings(style_data(battles, style), bootstrap, at, seed,
                                                                   ridge)
    elo = online_elo(battles)
    record = _record(battles)

    table = record.assign(rating=ratings, ci_low=low, ci_high=high, online_elo=[elo[m] for m in models])
    # Ratings equal to 1e-6 Elo share a rank (all ties → all first), as do names in the sort below.
    rounded = np.round(ratings, 6)
    table["rank"] = 1 + (rounded[None, :] > rounded[:, None]).sum(axis=1)
    order = np.lexsort((np.array(models), -rounded))
    columns = ["rank", "rating", "ci_low", "ci_high", "n_battles", "wins", "losses", "ties", "online_elo"]
    leaderboard = table.iloc[order][columns]

    n = np.zeros((len(models), len(models)), dtype=np.int64)
    n[counts.i, counts.j] = n[counts.j, counts.i] = counts.n
    w = np.zeros(n.shape)
    w[counts.i, counts.j], w[counts.j, counts.i] = counts.w, counts.n - counts.w
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n > 0, w / n, np.nan)
    predicted = sigmoid((ratings[:, None] - ratings[None, :]) / ELO_PER_LOGIT)
    names = [models[k] for k in order]

    def frame(matrix: npt.NDArray[Any]) -> pd.DataFrame:
        return pd.DataFrame(matrix[np.ix_(order, order)], index=pd.Index(names, name="model"), columns=names)

    return RatingsResult(anchor=anchor, bootstrap=bootstrap, seed=seed, ridge=ridge, n_battles=len(battles),
                         n_votes=counts.patterns.n_votes,
                         leaderboard=leaderboard, battles=frame(n), win_fraction=frame(fraction),
                         predicted=frame(predicted), online_elo=elo,
                         warnings=_graph_warnings(counts, models, record), style=style_table)


def _number(value: Any) -> float | int | None:
    """JSON-safe: NaN → None, numpy scalars → Python numbers."""
    if isinstance(value, np.integer | int):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value


def to_json(result: RatingsResult) -> dict[str, Any]:
    """The result as plain JSON data (NaN → null); models and matrices in leaderboard order."""
    models = {
        str(name): {key: _number(row[key]) for key in ("rank", "rating", "ci_low", "ci_high", "n_battles", "wins",
                                                        "losses", "ties", "online_elo")}
        for name, row in result.leaderboard.astype(object).iterrows()
    }

    def nested(frame: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
        return {str(r): {str(c): _number(v) for c, v in frame.loc[r].items()} for r in frame.index}

    return {"anchor": result.anchor, "bootstrap": result.bootstrap, "seed": result.seed, "ridge": result.ridge,
            "n_battles": result.n_battles, "n_votes": result.n_votes, "warnings": list(result.warnings),
            "models": models,
            "matrices": {"battles": nested(result.battles), "win_fraction": nested(result.win_fraction),
                         "predicted": nested(result.predicted)},
            "style_control": result.style is not None,
            **({} if result.style is None else {"style_coefficients": nested(result.style)})}
