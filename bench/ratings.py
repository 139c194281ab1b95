"""Speed of `evals.ratings`: aggregated, batched bootstrap against a naive per-round refit.

`playground bench ratings [--battles 100000] [--models 50] [--rounds 1000] [--naive-rounds N]`

Simulated battles (ratings ~ N(1000, 150²), random pairs, ties with an expected score still equal
to the Bradley–Terry probability; each answer has Arena style counts in conv_metadata, and the
longer, more formatted answer gains 0.3 log-odds per typical length difference, 0.1 per list and 0.2 per bold one)
are timed through each step of `compute_ratings`:

- rows → Battle:   checking the dict rows into `Battle` records (`evals.battle.parse_battles`)
- Battle → index:  numbering models and votes (`index_battles`)
- aggregate:       cells per unordered pair × outcome (`aggregate`)
- MLE fit:         Newton on the aggregated counts (`fit_ratings`)
- bootstrap:       `--rounds` multinomial resamples of the cells, fitted together by batched Newton
                   (`bootstrap_ratings`); the multinomial draws alone are timed too
- online Elo:      the sequential Elo loop over every battle
- end to end:      `compute_ratings` on the `IndexedBattles` (fit, bootstrap, matrices, online Elo)
- style control:   the battles' conv_metadata → style features (`style_features`), the style-controlled
                   point fit, its `--rounds` bootstrap (`bootstrap_style`), and `compute_ratings(...,
                   style=...)` end to end, timed in turns with the plain `compute_ratings` (A B A B,
                   medians): `style_vs_plain` is the ratio the issue asks to keep ≤ 3. The style
                   bootstrap's stopping rule (STYLE_BOOT_TOL) is checked against 20 rounds run to
                   1e-7: `style_boot_tol_max_abs_elo` is the largest rating difference.

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

from bench.common import alternate, median, report
from evals.battle import parse_battles
from evals.ratings.bradley_terry import aggregate, bootstrap_ratings, fit_ratings, to_elo
from evals.ratings.indexed import IndexedBattles, index_battles
from evals.ratings.newton import MAX_NEWTON_STEPS, MAX_STEP, NEWTON_TOL, RIDGE, FloatArray, IntArray
from evals.ratings.online_elo import online_elo
from evals.ratings.results import compute_ratings
from evals.ratings.style import bootstrap_style, fit_style_strengths, style_data, style_features
from playground.data.votes import ARENA_TIE

T = TypeVar("T")
STYLE_EFFECT = np.array([0.3, 0.0, 0.1, 0.2])  # planted log-odds per typical difference: tokens, headers, lists, bold


def simulate(n_battles: int, n_models: int, seed: int) -> list[dict[str, Any]]:
    """Arena rows with conv_metadata; P(tie) = 0.6 min(p, 1 − p) and P(a wins | no tie) =
    (p − P(tie)/2) / (1 − P(tie)), so E[score of a] = p = σ(θ_a − θ_b + x · STYLE_EFFECT),
    θ = R ln 10 / 400, x the battle's style features."""
    rng = np.random.default_rng(seed)
    names = [f"model-{k:03d}" for k in range(n_models)]
    truth = rng.normal(1000.0, 150.0, n_models)
    verbosity = rng.lognormal(0.0, 0.4, n_models)  # some models write longer, more formatted answers
    a = rng.integers(0, n_models, n_battles)
    b = (a + rng.integers(1, n_models, n_battles)) % n_models
    scale = verbosity[np.stack([a, b])]  # (2, N): side a, side b
    tokens = (rng.lognormal(np.log(300.0), 0.6, (2, n_battles)) * scale).astype(np.int64)
    headers, items, bold = (rng.poisson(mean * scale) for mean in (1.0, 2.0, 1.5))
    rows: list[dict[str, Any]] = []
    for n, (i, j) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        meta: dict[str, Any] = {}
        for k, side in enumerate("ab"):
            meta |= {f"sum_assistant_{side}_tokens": int(tokens[k, n]),
                     f"header_count_{side}": {"h2": int(headers[k, n])},
                     f"list_count_{side}": {"unordered": int(items[k, n])},
                     f"bold_count_{side}": {"**": int(bold[k, n])}}
        # a tie until the outcome is drawn, which needs the style features of every row
        rows.append({"model_a": names[i], "model_b": names[j], "winner": ARENA_TIE, "conv_metadata": meta})
    logit = (truth[a] - truth[b]) * np.log(10.0) / 400.0 + style_features(parse_battles(rows)) @ STYLE_EFFECT
    p = 1.0 / (1.0 + np.exp(-logit))
    tie = 0.6 * np.minimum(p, 1.0 - p)
    winner = np.where(rng.random(n_battles) < tie, "tie",
                      np.where(rng.random(n_battles) < (p - tie / 2) / (1.0 - tie), "model_a", "model_b"))
    for row, w in zip(rows, winner.tolist(), strict=True):
        row["winner"] = str(w)
    return rows


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


def naive_bootstrap(battles: IndexedBattles, rounds: int, anchor: int, seed: int) -> FloatArray:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench ratings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--battles", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds")
    parser.add_argument("--naive-rounds", type=int, help="naive rounds timed, then scaled to --rounds "
                        "(default: all --rounds, timed whole)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    naive_rounds = args.naive_rounds or args.rounds
    load_before = os.getloadavg()

    rows = simulate(args.battles, args.models, args.seed)
    t_rows, records = median_of(lambda: parse_battles(rows), args.repeats)
    t_index, battles = median_of(lambda: index_battles(records), args.repeats)
    anchor = 0
    t_agg, counts = median_of(lambda: aggregate(battles), args.repeats)
    t_fit, ratings = median_of(lambda: fit_ratings(counts, anchor), args.repeats)
    flat = counts.cells.ravel()
    probs = flat[flat > 0] / flat.sum()
    t_draw, _ = median_of(lambda: np.random.default_rng(args.seed).multinomial(len(battles), probs, size=args.rounds),
                        args.repeats)
    t_elo, _ = median_of(lambda: online_elo(battles), args.repeats)
    t_all, _ = median_of(lambda: compute_ratings(battles, bootstrap=args.rounds, seed=args.seed), args.repeats)

    t_features, features = median_of(lambda: style_features(records), args.repeats)
    data = style_data(battles, features)
    t_style_fit, phi = median_of(lambda: fit_style_strengths(data), args.repeats)
    t_style_boot, style_rounds = median_of(lambda: bootstrap_style(data, args.rounds, args.seed, start=phi),
                                           args.repeats)
    turns = alternate({
        "plain": lambda: compute_ratings(battles, bootstrap=args.rounds, seed=args.seed),
        "style": lambda: compute_ratings(battles, bootstrap=args.rounds, seed=args.seed, style=features),
    }, args.repeats)
    t_plain_all, t_style_all = median(turns["plain"]), median(turns["style"])
    # The bootstrap's stopping rule against rounds run to the float32 floor (same draws: same seed).
    m = len(battles.models)
    tight = bootstrap_style(data, 20, args.seed, start=phi, tol=1e-7)
    tol_gap = float(np.abs(to_elo(tight[:, :m], anchor) - to_elo(style_rounds[:20, :m], anchor)).max())

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
        {"step": "rows → Battle records", "seconds": t_rows},
        {"step": "Battle records → IndexedBattles", "seconds": t_index},
        {"step": "aggregate", "seconds": t_agg},
        {"step": "MLE fit (aggregated)", "seconds": t_fit},
        {"step": f"bootstrap, {args.rounds} rounds (batched)", "seconds": t_boot},
        {"step": "  of which multinomial draws", "seconds": t_draw},
        {"step": "online Elo", "seconds": t_elo},
        {"step": "compute_ratings end to end", "seconds": t_all},
        {"step": "naive MLE fit (raw battles)", "seconds": t_naive_fit},
        {"step": "Battle records → style features", "seconds": t_features},
        {"step": "style-controlled fit (point)", "seconds": t_style_fit},
        {"step": f"style-controlled bootstrap, {args.rounds} rounds", "seconds": t_style_boot},
        {"step": "compute_ratings plain, in turns", "seconds": t_plain_all},
        {"step": "compute_ratings style-controlled, in turns", "seconds": t_style_all},
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
        "all_seconds_plain_vs_style": [[round(t, 3) for t in turns[k]] for k in ("plain", "style")],
        "style_vs_plain": t_style_all / t_plain_all,
        "style_boot_vs_plain_boot": t_style_boot / t_boot,
        "style_coefficients_vs_planted": [[round(float(v), 4) for v in phi[0, m:]], STYLE_EFFECT.tolist()],
        "style_boot_tol_max_abs_elo": tol_gap,
        "mean_sd_elo_naive_vs_ours": [float(naive.std(axis=0, ddof=1)[1:].mean()),
                                      float(boot.std(axis=0, ddof=1)[1:].mean())],
    }, load_before)

