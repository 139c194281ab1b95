"""Bradley–Terry ratings on the Elo scale from battles aggregated per pair: the fit and its bootstrap.

The model (Bradley–Terry on the Elo scale, as Chatbot Arena reports it):

    P(a beats b) = 1 / (1 + 10^((R_b − R_a)/400)) = σ(θ_a − θ_b),   θ = R · ln 10 / 400

A tie, both-bad included, counts as half a win each way (`playground.data.votes.win_score`). The
battles are first aggregated per unordered pair {i, j}: n_ij battles, w_ij = wins of i + ½ ties.
The fit maximises the log-posterior

    ℓ(θ) = Σ_{i<j} [ w_ij log σ(θ_i − θ_j) + (n_ij − w_ij) log σ(θ_j − θ_i) ] − (λ/2) Σ_i θ_i²

by Newton's method, so its cost depends on the number of pairs, not of battles. The ridge λ (a
N(0, 1/λ) prior on θ, default λ = 1e-3: prior sd ≈ 31.6 log-odds ≈ 5500 Elo) changes ordinary
ratings by a negligible amount but keeps them finite where maximum likelihood has no answer: a model
that never lost (its rating would go to +∞), and groups of models that never met (only their
differences within a group are identified). Because ℓ's data term is shift-invariant, the ridge
also centres Σθ = 0; ratings are then shifted so that the anchor model is exactly 1000.

Bootstrap over votes: a ranking of k responses is k(k−1)/2 battles from one voter's one look, not
independent draws, so a round resamples VOTES with replacement and keeps each vote's battles
together. Battles that share a `vote_id` (within one `source`) are one vote; a battle without one
is a vote of its own, so for Arena files without vote ids, and for pair votes, this is the classic
resampling of battles. Votes with the same battles (the same outcome cells, unordered pair × {i
won, tie, j won}) are interchangeable, so resampling V votes is drawing each round's count of every
such pattern from a multinomial with the observed pattern frequencies; a round's cell counts are
its patterns' cells summed. With one battle per vote the patterns are the cells, and the draws are
exactly those of resampling battles (same seed, same intervals). All rounds are drawn at once and
fitted together by a batched Newton solve. Cells are ordered by the sorted model names, so the
intervals do not depend on the order of the battles, on vote ids or on which side a model played;
renaming models so that their alphabetical order changes draws different rounds (the point ratings
stay the same). Intervals are the 2.5 and 97.5 percentiles of each model's
rating over the rounds, the anchor fixed at 1000 in every round (so the anchor's interval is
[1000, 1000] and the others' measure uncertainty relative to it). `bootstrap=0` means no intervals:
ci_low and ci_high are NaN (null in JSON, "—" in the table).

The ratings at equal answer style (style control) are `evals.ratings.style`'s; `compute_ratings`
(`evals.ratings.results`) puts either together with the leaderboard.
"""

import itertools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from evals.ratings.indexed import OUTCOME_SCORE, IndexedBattles
from evals.ratings.newton import NEWTON_TOL, RIDGE, FloatArray, IntArray, damped_newton, per_model, sigmoid

ELO_PER_LOGIT = 400.0 / math.log(10.0)  # R = ELO_PER_LOGIT · θ
ANCHOR_RATING = 1000.0
CHUNK_FLOATS = 1 << 23  # ≈ 64 MiB of float64 per bootstrap chunk: rounds × (M² Hessian + cells + patterns)


@dataclass(frozen=True, eq=False)
class VotePatterns:
    """The votes behind the battles, grouped by what they hold (for the bootstrap): `weight[g]` votes
    have pattern g, which puts `count[e]` battles in flat cell `cell[e]` (pair index × 3 + outcome)
    for every entry e with `group[e] == g`. A pair vote is one battle in one cell; a ranking of k,
    k(k−1)/2 battles. Single-battle patterns come first, by cell, then the others by content, so
    nothing depends on the order of the battles or on vote ids."""

    weight: IntArray
    group: IntArray
    cell: IntArray
    count: IntArray

    @property
    def n_votes(self) -> int:
        return int(self.weight.sum())


@dataclass(frozen=True, eq=False)
class PairCounts:
    """The battles aggregated per unordered pair i < j (sorted by (i, j)), as outcome cells:
    cells[p] = (battles i won, ties, battles j won); and the votes they came from, as patterns
    over those cells."""

    n_models: int
    i: IntArray
    j: IntArray
    cells: IntArray
    patterns: VotePatterns

    @property
    def n(self) -> IntArray:
        return self.cells.sum(axis=1)

    @property
    def w(self) -> FloatArray:
        """w_ij = wins of i + ½ ties."""
        return self.cells @ OUTCOME_SCORE


def aggregate(battles: IndexedBattles) -> PairCounts:
    """Count each battle in its cell (unordered pair i < j, outcome for i); both orientations of a
    battle land in the same cell, so the counts ignore battle order and sides. Group the votes by
    their cells (`vote_patterns`)."""
    m = len(battles.models)
    lo, hi = np.minimum(battles.a, battles.b), np.maximum(battles.a, battles.b)
    score_lo = np.where(battles.a < battles.b, battles.score_a, 1.0 - battles.score_a)
    outcome = np.rint(2.0 * (1.0 - score_lo)).astype(np.int64)  # 0: lo won, 1: tie, 2: hi won
    pair_keys, pair = np.unique(lo * m + hi, return_inverse=True)
    cell = pair.reshape(-1) * 3 + outcome
    cells = np.bincount(cell, minlength=3 * len(pair_keys)).reshape(-1, 3)
    assert battles.vote is not None  # IndexedBattles.__post_init__ fills it
    return PairCounts(m, pair_keys // m, pair_keys % m, cells.astype(np.int64), vote_patterns(battles.vote, cell))


def vote_patterns(vote: IntArray, cell: IntArray) -> VotePatterns:
    """Votes (battle k in vote[k], flat cell cell[k]) grouped by their multiset of cells. Votes of
    one battle, the bulk of most data, are grouped vectorised; the others in one pass in Python."""
    single = np.bincount(vote)[vote] == 1
    single_cells, single_weight = np.unique(cell[single], return_counts=True)
    multi = np.flatnonzero(~single)
    multi = multi[np.lexsort((cell[multi], vote[multi]))]  # by vote, then cell
    shapes: Counter[tuple[int, ...]] = Counter(
        tuple(c for _, c in members)
        for _, members in itertools.groupby(zip(vote[multi].tolist(), cell[multi].tolist(), strict=True),
                                            key=lambda vc: vc[0]))
    keys = sorted(shapes)
    entries = np.array([(g, c, n) for g, key in enumerate(keys, start=len(single_cells))
                        for c, n in sorted(Counter(key).items())], dtype=np.int64).reshape(-1, 3)
    return VotePatterns(
        weight=np.concatenate([single_weight, np.array([shapes[k] for k in keys], dtype=np.int64)]),
        group=np.concatenate([np.arange(len(single_cells)), entries[:, 0]]),
        cell=np.concatenate([single_cells, entries[:, 1]]),
        count=np.concatenate([np.ones(len(single_cells), dtype=np.int64), entries[:, 2]]),
    )


def fit_log_strengths(i: IntArray, j: IntArray, n: FloatArray, w: FloatArray, n_models: int,
                      ridge: float = RIDGE, start: FloatArray | None = None) -> FloatArray:
    """θ (R, M) maximising ℓ(θ) (module docstring) for R data sets at once; n, w are (R, P); Newton
    starts from `start` (broadcast to (R, M); default 0). ℓ is strictly concave, so the start
    changes the number of steps, not the answer.

    Newton: θ ← θ + H⁻¹ g with g_k = Σ_pairs ±(w − n p) − λ θ_k (+ for the pair's i, − for its j),
    H = Σ_pairs n p (1 − p) (e_i − e_j)(e_i − e_j)ᵀ + λ I (positive definite thanks to λ), p = σ(θ_i − θ_j).
    """
    r, m = n.shape[0], n_models
    diag = np.arange(m)

    def system(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        p = sigmoid(theta[:, i] - theta[:, j])
        resid = w - n * p
        grad = per_model(resid, i, m) - per_model(resid, j, m) - ridge * theta
        curv = n * p * (1.0 - p)
        hess = np.zeros((r, m, m))
        hess[:, i, j] = -curv
        hess[:, j, i] = -curv
        hess[:, diag, diag] = per_model(curv, i, m) + per_model(curv, j, m) + ridge
        return grad, hess

    return damped_newton(system, np.zeros((r, m)) if start is None else np.broadcast_to(start, (r, m)), NEWTON_TOL)


def to_elo(theta: FloatArray, anchor: int) -> FloatArray:
    """R = 1000 + (400 / ln 10) · (θ − θ_anchor), per row."""
    return ANCHOR_RATING + ELO_PER_LOGIT * (theta - theta[..., anchor : anchor + 1])


def _fit_counts(counts: PairCounts, ridge: float) -> FloatArray:
    """θ (1, M) of the observed counts."""
    return fit_log_strengths(counts.i, counts.j, counts.n[None, :].astype(np.float64), counts.w[None, :],
                             counts.n_models, ridge)


def fit_ratings(counts: PairCounts, anchor: int, ridge: float = RIDGE) -> FloatArray:
    """The ratings (M,) on the Elo scale, models[anchor] at 1000."""
    return to_elo(_fit_counts(counts, ridge), anchor)[0]


def bootstrap_ratings(counts: PairCounts, rounds: int, anchor: int, seed: int = 0,
                      ridge: float = RIDGE) -> FloatArray:
    """Ratings (rounds, M) of `rounds` resamples of the votes with replacement, each vote with all
    its battles: each round's pattern counts ~ Multinomial(n_votes, observed pattern frequencies),
    its cell counts the patterns' cells summed; rounds fitted together, in chunks that keep memory
    near CHUNK_FLOATS (the random stream is the same whatever the chunking). With one battle per
    vote this is resampling the battles."""
    patterns = counts.patterns
    total = patterns.n_votes
    probs = patterns.weight / total
    rng = np.random.default_rng(seed)
    m, n_pairs = counts.n_models, len(counts.i)
    n_cells = 3 * n_pairs
    # Every round's optimum lies near the full data's, so Newton started there needs fewer steps.
    theta_hat = _fit_counts(counts, ridge)
    per_chunk = max(1, CHUNK_FLOATS // (m * m + n_cells + len(patterns.weight) + 2 * len(patterns.cell)))
    out = np.empty((rounds, m))
    for first in range(0, rounds, per_chunk):
        size = min(per_chunk, rounds - first)
        draws = rng.multinomial(total, probs, size=size)
        where = (np.arange(size)[:, None] * n_cells + patterns.cell[None, :]).ravel()
        cells = np.bincount(where, weights=(draws[:, patterns.group] * patterns.count).ravel(),
                            minlength=size * n_cells).reshape(size, n_pairs, 3)
        theta = fit_log_strengths(counts.i, counts.j, cells.sum(axis=2), cells @ OUTCOME_SCORE, m, ridge, theta_hat)
        out[first : first + size] = to_elo(theta, anchor)
    return out
