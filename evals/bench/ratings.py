"""Speed of `evals.ratings`: aggregated, batched bootstrap against a naive per-round refit.

`python -m evals.bench.ratings [--battles 100000] [--models 50] [--rounds 1000] [--naive-rounds N]`

Simulated battles (ratings ~ N(1000, 150²), random pairs, ties with an expected score still equal
to the Bradley–Terry probability) are timed through each step of `compute_ratings`:

- rows → Battles:  validating the dict rows and indexing the models (`battles_from_rows`)
- aggregate:       cells per unordered pair × outcome (`aggregate`)
- MLE fit:         Newton on the aggregated counts (`fit_ratings`)
- bootstrap:       `--rounds` multinomial resamples of the cells, fitted together by batched Newton
                   (`bootstrap_ratings`); the multinomial draws alone are timed too
- online Elo:      the sequential Elo loop over every battle
- end to end:      `compute_ratings` on the `Battles` (fit, bootstrap, matrices, online Elo)

The naive bootstrap is what one writes without aggregating: each round resamples the raw battle
indices with replacement and runs the same Newton iteration (same ridge, step cap and tolerance) on
per-battle arrays, still numpy-vectorised within the round. By default all `--rounds` naive rounds
are timed whole; a smaller `--naive-rounds` times that many and scales the time to `--rounds`
(the output then says `naive_extrapolated: true`). The speed-up is the naive time over our
bootstrap's: the two bootstraps take turns for `--repeats` rounds after one warm-up each (A B A B),
and each keeps its median. Every other step is the median of `--repeats` runs. The naive fit on all
battles is also compared with ours: the largest rating difference shows both solve the same problem.
"""

import argparse
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from evals.bench.common import alternate, median, report
from evals.ratings import (
    MAX_NEWTON_STEPS,
    MAX_STEP,
    NEWTON_TOL,
    RIDGE,
    Battles,
    FloatArray,
    IntArray,
    aggregate,
    battles_from_rows,
    bootstrap_ratings,
    compute_ratings,
    fit_ratings,
    online_elo,
    to_elo,
)

T = TypeVar("T")


def simulate(n_battles: int, n_models: int, seed: int) -> list[dict[str, str]]:
    """Arena rows; P(tie) = 0.6 min(p, 1 − p) and P(a wins | no tie) = (p − P(tie)/2) / (1 − P(tie)),
    so E[score of a] = p = 1 / (1 + 10^((R_b − R_a)/400))."""
    rng = np.random.default_rng(seed)
    names = [f"model-{k:03d}" for k in range(n_models)]
    truth = rng.normal(1000.0, 150.0, n_models)
    a = rng.integers(0, n_models, n_battles)
    b = (a + rng.integers(1, n_models, n_battles)) % n_models
    p = 1.0 / (1.0 + 10.0 ** ((truth[b] - truth[a]) / 400.0))
    tie = 0.6 * np.minimum(p, 1.0 - p)
    winner = np.where(rng.random(n_battles) < tie, "tie",
                      np.where(rng.random(n_battles) < (p - tie / 2) / (1.0 - tie), "model_a", "model_b"))
    return [{"model_a": names[i], "model_b": names[j], "winner": str(w)}
            for i, j, w in zip(a.tolist(), b.tolist(), winner.tolist(), strict=True)]


def naive_fit(a: IntArray, b: IntArray, score: FloatArray, m: int, ridge: float = RIDGE) -> FloatArray:
    """θ (M,) by Newton on raw battles: the module's iteration without the aggregation, so every
    step costs O(battles) instead of O(pairs)."""
    theta = np.zeros(m)
    for _ in range(MAX_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(theta[b] - theta[a]))
        resid, curv = score - p, p * (1.0 - p)
        grad = np.bincount(a, resid, m) - np.bincount(b, resid, m) - ridge * theta
        off = np.bincount(a * m + b, curv, m * m) + np.bincount(b * m + a, curv, m * m)
        hess = np.diag(np.bincount(a, curv, m) + np.bincount(b, curv, m) + ridge) - off.reshape(m, m)
        step = np.linalg.solve(hess, grad)
        biggest = np.abs(step).max()
        theta += step * min(1.0, MAX_STEP / max(biggest, 1e-300))
        if biggest < NEWTON_TOL:
            return theta
    raise RuntimeError("naive Newton did not converge")


def naive_bootstrap(battles: Battles, rounds: int, anchor: int, seed: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    m, n = len(battles.models), len(battles)
    out = np.empty((rounds, m))
    for r in range(rounds):
        pick = rng.integers(0, n, n)
        out[r] = to_elo(naive_fit(battles.a[pick], battles.b[pick], battles.score_a[pick], m), anchor)
    return out


def median_of(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median wall time of `repeats` calls (at least one), and the last result."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m evals.bench.ratings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--battles", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds")
    parser.add_argument("--naive-rounds", type=int, help="naive rounds timed, then scaled to --rounds "
                        "(default: all --rounds, timed whole)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    naive_rounds = args.naive_rounds or args.rounds
    load_before = os.getloadavg()

    rows = simulate(args.battles, args.models, args.seed)
    t_rows, battles = median_of(lambda: battles_from_rows(rows), args.repeats)
    anchor = 0
    t_agg, counts = median_of(lambda: aggregate(battles), args.repeats)
    t_fit, ratings = median_of(lambda: fit_ratings(counts, anchor), args.repeats)
    flat = counts.cells.ravel()
    probs = flat[flat > 0] / flat.sum()
    t_draw, _ = median_of(lambda: np.random.default_rng(args.seed).multinomial(len(battles), probs, size=args.rounds),
                        args.repeats)
    t_elo, _ = median_of(lambda: online_elo(battles), args.repeats)
    t_all, _ = median_of(lambda: compute_ratings(battles, bootstrap=args.rounds, seed=args.seed), args.repeats)

    t_naive_fit, theta = median_of(lambda: naive_fit(battles.a, battles.b, battles.score_a, len(battles.models)), 1)
    draws: dict[str, Any] = {}  # the last result of each bootstrap, for the interval comparison
    times = alternate({
        "ours": lambda: draws.__setitem__("ours", bootstrap_ratings(counts, args.rounds, anchor, args.seed)),
        "naive": lambda: draws.__setitem__("naive", naive_bootstrap(battles, naive_rounds, anchor, args.seed)),
    }, args.repeats)
    boot, naive = draws["ours"], draws["naive"]
    t_boot, t_naive = median(times["ours"]), median(times["naive"]) * args.rounds / naive_rounds

    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    rows_out: list[dict[str, Any]] = [
        {"step": "rows → Battles", "seconds": t_rows},
        {"step": "aggregate", "seconds": t_agg},
        {"step": "MLE fit (aggregated)", "seconds": t_fit},
        {"step": f"bootstrap, {args.rounds} rounds (batched)", "seconds": t_boot},
        {"step": "  of which multinomial draws", "seconds": t_draw},
        {"step": "online Elo", "seconds": t_elo},
        {"step": "compute_ratings end to end", "seconds": t_all},
        {"step": "naive MLE fit (raw battles)", "seconds": t_naive_fit},
        {"step": f"naive bootstrap, {args.rounds} rounds"
                 + (f" (scaled from {naive_rounds})" if naive_rounds != args.rounds else " (timed whole)"),
         "seconds": t_naive},
    ]
    report("ratings", rows_out, {
        "battles": args.battles, "models": args.models, "rounds": args.rounds, "naive_rounds": naive_rounds,
        "naive_extrapolated": naive_rounds != args.rounds,
        "repeats": args.repeats,
        "all_seconds_ours_vs_naive": [[round(t, 3) for t in times[k]] for k in ("ours", "naive")],
        "speedup_bootstrap": t_naive / t_boot,
        "speedup_bootstrap_incl_aggregate": t_naive / (t_boot + t_agg),
        "max_abs_elo_naive_vs_ours": float(np.abs(to_elo(theta[None, :], anchor)[0] - ratings).max()),
        "mean_ci_width_elo": float(np.mean((high - low)[np.arange(args.models) != anchor])),
        "mean_sd_elo_naive_vs_ours": [float(naive.std(axis=0, ddof=1)[1:].mean()),
                                      float(boot.std(axis=0, ddof=1)[1:].mean())],
    }, load_before)


if __name__ == "__main__":
    main()
