"""Style control (Chatbot Arena's, `--style-control`): ratings at equal answer style.

Each battle k also has style differences x_k (`style_features`: answer length in tokens, Markdown
headers, list items, bold spans, each as (a − b)/(a + b + 1) scaled to unit root mean square) and
the Bradley–Terry fit (`evals.ratings.bradley_terry`) becomes

    P(a beats b) = σ(θ_a − θ_b + x_k · β),

β the style coefficients (same ridge), so the ratings are those at equal style and β says what a
typical difference in each element is worth. Battles no longer aggregate per pair, so the fit and
its bootstrap work on the battles themselves (`fit_style_strengths`, `bootstrap_style`): the same
resampling of votes, each round's vote counts drawn directly, rounds fitted in batches by Newton
from the full data's optimum.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from evals.battle import Battle
from evals.ratings.bradley_terry import ELO_PER_LOGIT, to_elo
from evals.ratings.indexed import IndexedBattles
from evals.ratings.newton import NEWTON_TOL, RIDGE, FloatArray, IntArray, damped_newton, per_model, sigmoid
from playground.core.errors import PlaygroundError
from playground.data.style import STYLE_ELEMENTS, style_totals

STYLE_FEATURES = STYLE_ELEMENTS  # the style covariates: answer length in tokens, headers, list items, bold spans
# A style-controlled bootstrap round stops after a Newton step below this, in log-odds. Newton converges
# quadratically: from `bootstrap_style`'s linear start the steps were ~3e-3, then ~2e-6 (100,000 battles, 50
# models), so what a step s leaves is about 0.2 s²: < 2e-5 log-odds (0.004 Elo) after a step < 1e-2, which
# `playground bench ratings` checks against rounds run to 1e-7. float32 sums put a floor near 1e-8 anyway.
STYLE_BOOT_TOL = 1e-2
STYLE_CHUNK_FLOATS = 1 << 22  # ≈ 16 MiB of float32 per style bootstrap chunk: rounds × battles × (S + 3)


def style_features(battles: Sequence[Battle], where: str = "") -> FloatArray:
    """(N, S) style differences of the battles, answer a minus answer b, one column per
    STYLE_FEATURES, from each battle's `conv_metadata` (`playground.data.style`): as Chatbot Arena,
    d = (count_a − count_b) / (count_a + count_b + 1) per element, so a difference is relative to
    the answers' size, then each column divided by its root mean square over the battles (1 = a
    typical difference). Arena also subtracts each column's mean; we do not, so that zero is equal
    style (the ratings are read there) and swapping a battle's sides negates its row. A column
    that is zero throughout (no bold anywhere) stays zero: the ridge then keeps its coefficient 0.
    `where` ("FILE: ") starts error messages."""
    counts = np.empty((len(battles), 2, len(STYLE_FEATURES)))
    for n, battle in enumerate(battles):
        if battle.conv_metadata is None:
            raise PlaygroundError(f"{where}battle {n + 1}: no conv_metadata; style control needs both answers' "
                                  "style counts (Chatbot Arena's conv_metadata fields)")
        for side, name in enumerate(("a", "b")):
            counts[n, side] = style_totals(battle.conv_metadata, name, f"{where}battle {n + 1}")
    diff = (counts[:, 0] - counts[:, 1]) / (counts[:, 0] + counts[:, 1] + 1.0)
    rms = np.sqrt(np.mean(diff**2, axis=0))
    return diff / np.where(rms > 0.0, rms, 1.0)


@dataclass(frozen=True, eq=False)
class StyleData:
    """The battles sorted by unordered pair for the style-controlled fit: battles starts[p] to
    starts[p] + sizes[p] − 1 are models[i[p]] against models[j[p]] (i < j, pairs sorted); battle k
    scores y[k] for i, has style differences x[k] (i minus j) and was cast in vote[k]."""

    n_models: int
    i: IntArray
    j: IntArray
    starts: IntArray
    sizes: IntArray
    y: FloatArray
    x: FloatArray
    vote: IntArray


def style_data(battles: IndexedBattles, features: FloatArray) -> StyleData:
    """`battles` with their (N, S) style differences (a minus b, `style_features`), sorted by pair."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) != len(battles) or not np.isfinite(features).all():
        raise PlaygroundError(f"style features must be finite, one row per battle ({len(battles)}), "
                              f"got shape {features.shape}")
    m = len(battles.models)
    a_low = battles.a < battles.b
    lo, hi = np.where(a_low, battles.a, battles.b), np.where(a_low, battles.b, battles.a)
    order = np.argsort(lo * m + hi, kind="stable")
    keys, sizes = np.unique((lo * m + hi)[order], return_counts=True)
    assert battles.vote is not None  # IndexedBattles.__post_init__ fills it
    return StyleData(
        n_models=m, i=keys // m, j=keys % m, starts=np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes=sizes,
        y=np.where(a_low, battles.score_a, 1.0 - battles.score_a)[order],
        x=np.where(a_low[:, None], features, -features)[order], vote=battles.vote[order])


def fit_style_strengths(data: StyleData, ridge: float = RIDGE, weights: npt.NDArray[np.float32] | None = None,
                        start: FloatArray | None = None, tol: float = NEWTON_TOL) -> FloatArray:
    """φ = (θ, β), (R, M + S), maximising the style-controlled log-posterior

        ℓ(φ) = Σ_k w_k [y_k log σ(η_k) + (1 − y_k) log σ(−η_k)] − (λ/2) (|θ|² + |β|²),
        η_k = θ_i − θ_j + x_k · β,

    for R weightings of the battles at once: `weights` (R, N) float32 says how often each battle is
    in each bootstrap round; None fits the data once (R = 1). Newton from `start` (default 0) until
    the largest step is below `tol`. The battles cannot be aggregated per pair (each has its own
    x_k), so a step costs O(R · N · S): the per-battle arithmetic is done in float32 when weighted
    (memory traffic dominates), its sums per pair (reduceat over one pair's battles) and over
    battles (BLAS) then go to float64 for the (M + S)² Newton solve; unweighted, all float64.

    With t = tanh(η/2): σ(η) = (1 + t)/2 and σ(η)(1 − σ(η)) = (1 − t²)/4. The gradient and
    Hessian come from per-pair sums of r_k = w_k (y_k − σ), c_k = w_k σ(1 − σ) and c_k x_k, and the
    battle sums Σ r_k x_k and Σ c_k x_k x_kᵀ; the per-battle arrays hold 2 r_k = w_k (2y_k − 1 − t)
    and −4 c_k = w_k (t² − 1), one pass each fewer, the factors applied to the sums."""
    dtype = np.float64 if weights is None else np.float32
    r, width = 1 if weights is None else len(weights), data.n_models + data.x.shape[1]
    xt = np.ascontiguousarray(data.x.T, dtype=dtype)
    y_signed = (2.0 * data.y - 1.0).astype(dtype)
    phi = np.zeros((r, width)) if start is None else np.broadcast_to(start, (r, width))
    return damped_newton(lambda x: _newton_system(data, x, ridge, weights, xt, y_signed), phi, tol)


def _newton_system(data: StyleData, phi: FloatArray, ridge: float, weights: npt.NDArray[np.float32] | None,
                   xt: npt.NDArray[Any], y_signed: npt.NDArray[Any]) -> tuple[FloatArray, FloatArray]:
    """The gradient (R, M + S) and Hessian (R, M + S, M + S) of −ℓ's Newton system at φ, per-battle
    arithmetic in xt's dtype (`fit_style_strengths`)."""
    m, s, n = data.n_models, len(xt), len(data.y)
    r = len(phi)
    stack = np.empty((r, 2 + s, n), xt.dtype)  # 2r_k, −4c_k, −4c_k x_k: one reduceat and one matmul for all
    resid, curv = stack[:, 0], stack[:, 1]
    scale = np.array([0.5, -0.25] + [-0.25] * s)[None, :, None]
    half = 0.5 * phi
    t = np.repeat((half[:, data.i] - half[:, data.j]).astype(xt.dtype), data.sizes, axis=1)
    t += np.einsum("rs,sn->rn", half[:, m:].astype(xt.dtype), xt)  # BLAS is several times slower at inner size S
    np.tanh(t, out=t)
    np.subtract(y_signed, t, out=resid)
    np.multiply(t, t, out=curv)
    curv -= 1.0
    if weights is not None:
        resid *= weights
        curv *= weights
    np.multiply(curv[:, None, :], xt[None], out=stack[:, 2:])
    pairs = np.add.reduceat(stack, data.starts, axis=2) * scale  # (r, 2 + s, P), float64
    moments = _style_moments(stack, xt) * scale[:, [0, *range(2, 2 + s)]]
    by_model = (per_model(pairs.reshape(-1, len(data.i)), data.i, m)
                - per_model(pairs.reshape(-1, len(data.i)), data.j, m)).reshape(r, 2 + s, m)
    grad = np.concatenate([by_model[:, 0], moments[:, 0]], axis=1) - ridge * phi
    hess = np.zeros((r, m + s, m + s))
    models, every = np.arange(m), np.arange(m + s)
    hess[:, data.i, data.j] = -pairs[:, 1]
    hess[:, data.j, data.i] = -pairs[:, 1]
    hess[:, models, models] = (per_model(pairs[:, 1], data.i, m) + per_model(pairs[:, 1], data.j, m))
    hess[:, :m, m:] = by_model[:, 2:].transpose(0, 2, 1)
    hess[:, m:, :m] = by_model[:, 2:]
    hess[:, m:, m:] = moments[:, 1:]
    hess[:, every, every] += ridge
    return grad, hess


def _style_moments(stack: npt.NDArray[Any], xt: npt.NDArray[Any]) -> FloatArray:
    """(R, 1 + S, S) float64: Σ_k stack[:, 0] x_kᵀ and Σ_k stack[:, 2 + q] x_kᵀ (q < S), the battle
    sums of the style fit. In float32 by BLAS dot products over the battles (one per number, the
    symmetric block's upper half copied): a matmul of (R(1 + S), N) by (N, S) ran 2-3× slower, its
    kernels being made for larger inner sizes than S = 4. In float64 (the one-row point fit) by
    that matmul: OpenBLAS runs ddot on its threads, which on a busy machine took 15× longer."""
    r, s = len(stack), len(xt)
    rows = [0, *range(2, 2 + s)]
    if stack.dtype != np.float32:
        return stack[:, rows] @ xt.T
    out = np.empty((r, 1 + s, s))
    for row in range(r):
        for q in range(s):
            out[row, 0, q] = np.dot(stack[row, 0], xt[q])
            for u in range(q, s):
                out[row, 1 + q, u] = out[row, 1 + u, q] = np.dot(stack[row, 2 + q], xt[u])
    return out


def bootstrap_style(data: StyleData, rounds: int, seed: int = 0, ridge: float = RIDGE,
                    start: FloatArray | None = None, tol: float = STYLE_BOOT_TOL) -> FloatArray:
    """φ (rounds, M + S) of `rounds` resamples of the votes with replacement (each vote with all
    its battles: a round's weight of a battle is how often its vote was drawn), fitted together
    in chunks of about STYLE_CHUNK_FLOATS to `tol`; `start` is the full data's optimum φ̂ (fitted
    here if None). The draws are the same whatever the chunking.

    Every round starts one step ahead: at φ̂ the probabilities σ(η̂_k) are the same in every round,
    so a round's gradient there is linear in its weights, g_r = Σ_k w_k (y_k − σ(η̂_k)) z_k − λφ̂,
    and φ̂ + Ĥ⁻¹ g_r (Ĥ: the full data's Hessian) costs one weighted sum instead of a Newton step's
    sigmoids and Hessian; it lands near the round's optimum (the error is of second order in the
    round's distance from φ̂), where Newton finishes in a step or two."""
    rng = np.random.default_rng(seed)
    n, s, m = len(data.y), data.x.shape[1], data.n_models
    phi_hat = fit_style_strengths(data, ridge) if start is None else np.reshape(start, (1, m + s))
    _, hess_hat = _newton_system(data, phi_hat, ridge, None, np.ascontiguousarray(data.x.T),
                                 2.0 * data.y - 1.0)
    inverse = np.linalg.inv(hess_hat[0])
    eta_hat = np.repeat(phi_hat[0, data.i] - phi_hat[0, data.j], data.sizes) + data.x @ phi_hat[0, m:]
    resid_hat = (data.y - sigmoid(eta_hat)).astype(np.float32)
    xt = np.ascontiguousarray(data.x.T, dtype=np.float32)
    n_votes = int(data.vote.max()) + 1
    per_chunk = max(1, STYLE_CHUNK_FLOATS // ((3 + s) * n))
    out = np.empty((rounds, m + s))
    for first in range(0, rounds, per_chunk):
        size = min(per_chunk, rounds - first)
        weights = np.empty((size, n), dtype=np.float32)
        for row in weights:  # one round at a time: its counts array stays in cache
            row[:] = np.bincount(rng.integers(0, n_votes, n_votes), minlength=n_votes)[data.vote]
        weighted = weights * resid_hat
        per_pair = np.add.reduceat(weighted, data.starts, axis=1).astype(np.float64)
        grad = np.concatenate([per_model(per_pair, data.i, m) - per_model(per_pair, data.j, m),
                               weighted @ xt.T], axis=1) - ridge * phi_hat
        out[first : first + size] = fit_style_strengths(data, ridge, weights, phi_hat + grad @ inverse, tol)
    return out


def style_controlled_ratings(data: StyleData, bootstrap: int, anchor: int, seed: int,
                             ridge: float) -> tuple[FloatArray, FloatArray, FloatArray, pd.DataFrame]:
    """Style-controlled ratings (M,), their 95% interval bounds, and the style coefficients' table."""
    m = data.n_models
    phi = fit_style_strengths(data, ridge)
    if bootstrap:
        rounds = bootstrap_style(data, bootstrap, seed, ridge, phi)
        low, high = np.percentile(np.concatenate([to_elo(rounds[:, :m], anchor), rounds[:, m:]], axis=1),
                                  [2.5, 97.5], axis=0)
    else:
        low = high = np.full(phi.shape[1], np.nan)
    beta = phi[0, m:]
    table = pd.DataFrame({"coefficient": beta, "ci_low": low[m:], "ci_high": high[m:], "elo": beta * ELO_PER_LOGIT},
                         index=pd.Index(STYLE_FEATURES, name="feature"))
    return to_elo(phi[:, :m], anchor)[0], low[:m], high[:m], table
