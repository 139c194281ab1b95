"""Model ratings from pairwise battles: Bradley–Terry on the Elo scale, bootstrap intervals, online Elo.

`python -m evals.ratings --battles FILE --out OUT.json` reads Chatbot Arena battle rows
(`model_a`, `model_b`, `winner` ∈ {model_a, model_b, tie, tie (bothbad)}, optionally `vote_id`), as
`python -m playground.data export --format arena` writes them, and prints a leaderboard.

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
together. Battle rows that share a `vote_id` (within one `source`) are one vote; a row without one
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

Style control (Chatbot Arena's, `--style-control`): each battle k also has style differences x_k
(`style_features`: answer length in tokens, Markdown headers, list items, bold spans, each as
(a − b)/(a + b + 1) scaled to unit root mean square) and the fit becomes

    P(a beats b) = σ(θ_a − θ_b + x_k · β),

β the style coefficients (same ridge), so the ratings are those at equal style and β says what a
typical difference in each element is worth. Battles no longer aggregate per pair, so the fit and
its bootstrap work on the battles themselves (`fit_style_strengths`, `bootstrap_style`): the same
resampling of votes, each round's vote counts drawn directly, rounds fitted in batches by Newton
from the full data's optimum.
"""

import itertools
import json
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from evals.battles import vote_key
from playground.core.errors import PlaygroundError
from playground.data.rows import RowError, read_records
from playground.data.style import STYLE_ELEMENTS, style_totals
from playground.data.votes import ARENA_A, ARENA_B, ARENA_TIE, ARENA_WINNERS, win_score

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

KEYS = ("model_a", "model_b", "winner")
ELO_PER_LOGIT = 400.0 / math.log(10.0)  # R = ELO_PER_LOGIT · θ
ANCHOR_RATING = 1000.0
DEFAULT_ANCHOR = "sft"
RIDGE = 1e-3
# The score of the pair's lower-index model i per cell: i won, tie, j won.
OUTCOME_SCORE = np.array([win_score(ARENA_A), win_score(ARENA_TIE), win_score(ARENA_B)])
MAX_NEWTON_STEPS = 200
NEWTON_TOL = 1e-10  # largest |Δθ| in log-odds (≈ 2e-8 Elo); Newton converges quadratically, so one more step is exact
MAX_STEP = 4.0  # log-odds per Newton step: damps the first steps towards a model with (almost) no losses
CHUNK_FLOATS = 1 << 23  # ≈ 64 MiB of float64 per bootstrap chunk: rounds × (M² Hessian + cells + patterns)
STYLE_FEATURES = STYLE_ELEMENTS  # the style covariates: answer length in tokens, headers, list items, bold spans
# A style-controlled bootstrap round stops after a Newton step below this, in log-odds. Newton converges
# quadratically: from `bootstrap_style`'s linear start the steps were ~3e-3, then ~2e-6 (100,000 battles, 50
# models), so what a step s leaves is about 0.2 s²: < 2e-5 log-odds (0.004 Elo) after a step < 1e-2, which
# `python -m evals.bench.ratings` checks against rounds run to 1e-7. float32 sums put a floor near 1e-8 anyway.
STYLE_BOOT_TOL = 1e-2
STYLE_CHUNK_FLOATS = 1 << 22  # ≈ 16 MiB of float32 per style bootstrap chunk: rounds × battles × (S + 3)


@dataclass(frozen=True, eq=False)
class Battles:
    """Battles as index arrays: battle k is models[a[k]] vs models[b[k]], scoring score_a[k] for a
    (1 win, 0 loss, 0.5 tie or both bad), cast in vote vote[k] (the battles of one ranking share
    it; None: every battle is a vote of its own). `models` is sorted, so nothing depends on input
    order; votes are renumbered 0..V−1."""

    models: tuple[str, ...]
    a: IntArray
    b: IntArray
    score_a: FloatArray
    vote: IntArray | None = None

    def __post_init__(self) -> None:
        a, b = np.array(self.a, dtype=np.int64), np.array(self.b, dtype=np.int64)
        score = np.array(self.score_a, dtype=np.float64)
        vote = np.arange(len(a)) if self.vote is None else np.array(self.vote, dtype=np.int64)
        if list(self.models) != sorted(set(self.models)):
            raise ValueError("Battles.models must be sorted and unique")
        if not (a.ndim == b.ndim == score.ndim == vote.ndim == 1 and len(a) == len(b) == len(score) == len(vote)):
            raise ValueError("Battles.a, .b, .score_a and .vote must be 1-D arrays of one length")
        m = len(self.models)
        if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= m or (a == b).any()):
            raise ValueError("Battles.a and .b must index two different models")
        if not np.isin(score, OUTCOME_SCORE).all():
            raise ValueError("Battles.score_a must hold 0, 0.5 or 1")
        vote = np.unique(vote, return_inverse=True)[1].reshape(-1)  # numbered 0..V−1
        for name, array in (("a", a), ("b", b), ("score_a", score), ("vote", vote)):
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def n_votes(self) -> int:
        assert self.vote is not None  # __post_init__ fills it
        return int(self.vote.max()) + 1 if len(self.vote) else 0

    def __len__(self) -> int:
        return len(self.a)


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
    # With style control: per STYLE_FEATURES, its coefficient β (log-odds per typical difference, a
    # minus b; > 0: the answer with more of it wins more often), 95% interval (NaN without bootstrap),
    # and `elo`, β in Elo points. None: plain ratings.
    style: pd.DataFrame | None = None


# ---------------------------------------------------------------------------------------------- input


def check_battle(record: Any, where: str) -> dict[str, Any]:
    """One battle row, checked: its KEYS, plus `vote_id` and `source` where given (an empty
    `vote_id`, as a CSV cell or a JSON null, is none); `where` ("FILE: line 3") starts every error
    message."""
    if not isinstance(record, Mapping):
        raise PlaygroundError(f"{where}: expected an object with {', '.join(KEYS)}, got {type(record).__name__}")
    missing = [k for k in KEYS if k not in record]
    if missing:
        raise PlaygroundError(f"{where}: missing {', '.join(missing)}; a battle needs {', '.join(KEYS)}")
    for key in ("model_a", "model_b"):
        if not isinstance(record[key], str) or not record[key].strip():
            raise PlaygroundError(f"{where}: {key} must be a non-empty string (a model name), got {record[key]!r}")
    if record["winner"] not in ARENA_WINNERS:
        allowed = ", ".join(repr(w) for w in ARENA_WINNERS)
        raise PlaygroundError(f"{where}: winner is {record['winner']!r}; expected one of {allowed}")
    if record["model_a"] == record["model_b"]:
        raise PlaygroundError(f"{where}: model_a and model_b are both {record['model_a']!r}; "
                              "a battle needs two different models")
    vote_id, source = record.get("vote_id"), record.get("source")
    if vote_id is not None and (isinstance(vote_id, bool) or not isinstance(vote_id, int | str)):
        raise PlaygroundError(f"{where}: vote_id must be an integer or a string (the vote the battle came "
                              f"from), got {vote_id!r}")
    if source is not None and not isinstance(source, str):
        raise PlaygroundError(f"{where}: source must be a string, got {source!r}")
    extra = {"vote_id": vote_id} if vote_id not in (None, "") else {}
    if source is not None:
        extra["source"] = source
    category = record.get("category")
    if category not in (None, ""):
        if not isinstance(category, str):
            raise PlaygroundError(f"{where}: category must be a string (the prompt's category), got {category!r}")
        extra["category"] = category
    metadata = record.get("conv_metadata")
    if isinstance(metadata, str) and metadata:  # a CSV cell holds the object as JSON text
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            raise PlaygroundError(f"{where}: conv_metadata is not a JSON object") from None
    if metadata not in (None, ""):
        extra["conv_metadata"] = metadata  # checked by style_features, only when style control asks for it
    for key in ("len_a", "len_b"):  # answer lengths, for the length-controlled win rate
        value = record.get(key)
        if value in (None, ""):
            continue
        if isinstance(value, str):  # a CSV cell
            value = float(value) if value.replace(".", "", 1).isdigit() else value
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise PlaygroundError(f"{where}: {key} must be a length ≥ 0, got {record[key]!r}")
        extra[key] = value
    return {**{k: record[k] for k in KEYS}, **extra}


def read_battles(path: Path | str) -> list[dict[str, Any]]:
    """Battle rows {model_a, model_b, winner[, vote_id, source, category, conv_metadata, len_a,
    len_b]} (other fields dropped) from JSON lines (.jsonl, or .json), a .json list, .csv or .parquet; the first
    bad row raises `PlaygroundError` with its line (JSONL, CSV: as an editor numbers them) or row
    number (Parquet, JSON list)."""
    path = Path(path)
    if _is_json_list(path):
        records: Iterable[tuple[int, Any]] = _json_list(path)
        label = "row"
    else:
        records = read_records(path)
        label = "row" if path.suffix.lower() == ".parquet" else "line"
    rows = []
    for number, record in records:
        if isinstance(record, RowError):  # a JSONL line that is not JSON
            raise PlaygroundError(f"{path}: {record}")
        rows.append(check_battle(record, f"{path}: {label} {number}"))
    if not rows:
        raise PlaygroundError(f"{path}: no battles (the file holds no rows)")
    return rows


def _is_json_list(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _json_list(path: Path) -> list[tuple[int, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PlaygroundError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PlaygroundError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return list(enumerate(data, start=1))


def battles_from_rows(rows: Sequence[Mapping[str, Any]]) -> Battles:
    """Rows {model_a, model_b, winner[, vote_id, source]} → `Battles`; models sorted by name, battles
    kept in order; rows with the same (source, vote_id) are one vote, a row without vote_id its own."""
    checked = [check_battle(row, f"row {n}") for n, row in enumerate(rows, start=1)]
    if not checked:
        raise PlaygroundError("no battles")
    names = np.array([r["model_a"] for r in checked] + [r["model_b"] for r in checked])
    models, index = np.unique(names, return_inverse=True)
    score = np.fromiter((win_score(r["winner"]) for r in checked), dtype=np.float64, count=len(checked))
    votes: dict[Hashable, int] = {}
    vote = [votes.setdefault(key if key is not None else ("row", n), len(votes))
            for n, key in enumerate(map(vote_key, checked))]
    n = len(checked)
    return Battles(tuple(str(m) for m in models), index[:n], index[n:], score, np.array(vote, dtype=np.int64))


# ------------------------------------------------------------------------------------------ the model


def aggregate(battles: Battles) -> PairCounts:
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
    assert battles.vote is not None  # Battles.__post_init__ fills it
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


def sigmoid(x: FloatArray) -> FloatArray:
    """σ(x) = 1 / (1 + e^−x), written with tanh so large |x| neither overflows nor warns."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _per_model(values: FloatArray, index: IntArray, m: int) -> FloatArray:
    """Sum (R, P) per-pair values into (R, M) per-model totals at `index` (a pair's i or j)."""
    r = values.shape[0]
    flat = (np.arange(r)[:, None] * m + index[None, :]).ravel()
    return np.bincount(flat, weights=values.ravel(), minlength=r * m).reshape(r, m)


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
        grad = _per_model(resid, i, m) - _per_model(resid, j, m) - ridge * theta
        curv = n * p * (1.0 - p)
        hess = np.zeros((r, m, m))
        hess[:, i, j] = -curv
        hess[:, j, i] = -curv
        hess[:, diag, diag] = _per_model(curv, i, m) + _per_model(curv, j, m) + ridge
        return grad, hess

    return damped_newton(system, np.zeros((r, m)) if start is None else np.broadcast_to(start, (r, m)), NEWTON_TOL)


def damped_newton(system: Callable[[FloatArray], tuple[FloatArray, FloatArray]], start: FloatArray,
                  tol: float) -> FloatArray:
    """Batched Newton's method from `start` (R, K) (broadcast): `system(x)` gives the gradient (R, K)
    and Hessian (R, K, K) of each row's concave objective; each step is cut to MAX_STEP in its
    largest coordinate, and the iteration stops when every row's largest step is below `tol`."""
    x = np.array(start, dtype=np.float64)
    for _ in range(MAX_NEWTON_STEPS):
        grad, hess = system(x)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        biggest = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, MAX_STEP / np.maximum(biggest, 1e-300))
        x += step
        if biggest.max() < tol:
            return x
    raise RuntimeError(f"Newton's method did not converge in {MAX_NEWTON_STEPS} steps")


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


# ------------------------------------------------------------------------------------ style control


def style_features(rows: Sequence[Mapping[str, Any]], where: str = "") -> FloatArray:
    """(N, S) style differences of the battle rows, answer a minus answer b, one column per
    STYLE_FEATURES, from each row's `conv_metadata` (`playground.data.style`): as Chatbot Arena,
    d = (count_a − count_b) / (count_a + count_b + 1) per element, so a difference is relative to
    the answers' size, then each column divided by its root mean square over the battles (1 = a
    typical difference). Arena also subtracts each column's mean; we do not, so that zero is equal
    style (the ratings are read there) and swapping a battle's sides negates its row. A column
    that is zero throughout (no bold anywhere) stays zero: the ridge then keeps its coefficient 0.
    `where` ("FILE: ") starts error messages."""
    counts = np.empty((len(rows), 2, len(STYLE_FEATURES)))
    for n, row in enumerate(rows):
        if "conv_metadata" not in row:
            raise PlaygroundError(f"{where}battle {n + 1}: no conv_metadata; style control needs both answers' "
                                  "style counts (Chatbot Arena's conv_metadata fields)")
        for side, name in enumerate(("a", "b")):
            counts[n, side] = style_totals(row["conv_metadata"], name, f"{where}battle {n + 1}")
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


def style_data(battles: Battles, features: FloatArray) -> StyleData:
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
    assert battles.vote is not None  # Battles.__post_init__ fills it
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
    by_model = (_per_model(pairs.reshape(-1, len(data.i)), data.i, m)
                - _per_model(pairs.reshape(-1, len(data.i)), data.j, m)).reshape(r, 2 + s, m)
    grad = np.concatenate([by_model[:, 0], moments[:, 0]], axis=1) - ridge * phi
    hess = np.zeros((r, m + s, m + s))
    models, every = np.arange(m), np.arange(m + s)
    hess[:, data.i, data.j] = -pairs[:, 1]
    hess[:, data.j, data.i] = -pairs[:, 1]
    hess[:, models, models] = (_per_model(pairs[:, 1], data.i, m) + _per_model(pairs[:, 1], data.j, m))
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
        grad = np.concatenate([_per_model(per_pair, data.i, m) - _per_model(per_pair, data.j, m),
                               weighted @ xt.T], axis=1) - ridge * phi_hat
        out[first : first + size] = fit_style_strengths(data, ridge, weights, phi_hat + grad @ inverse, tol)
    return out


def online_elo(battles: Battles, k: float = 4.0, base: float = 10.0, scale: float = 400.0,
               init: float = 1000.0) -> dict[str, float]:
    """Classic sequential Elo over the battles in their given order (so, unlike the Bradley–Terry
    ratings, it depends on that order): E_a = 1 / (1 + base^((R_b − R_a)/scale)),
    R_a += k (S_a − E_a), R_b −= k (S_a − E_a)."""
    ratings = [init] * len(battles.models)
    for a, b, s in zip(battles.a.tolist(), battles.b.tolist(), battles.score_a.tolist(), strict=True):
        expected = 1.0 / (1.0 + base ** ((ratings[b] - ratings[a]) / scale))
        ratings[a] += k * (s - expected)
        ratings[b] -= k * (s - expected)
    return dict(zip(battles.models, ratings, strict=True))


# ------------------------------------------------------------------------------------------- results


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


def _record(battles: Battles) -> pd.DataFrame:
    """n_battles, wins, losses, ties (both-bad included) per model, in `battles.models` order."""
    m = len(battles.models)

    def count(score_a: float) -> IntArray:
        return (np.bincount(battles.a[battles.score_a == score_a], minlength=m)
                + np.bincount(battles.b[battles.score_a == 1.0 - score_a], minlength=m))

    wins, losses, ties = count(1.0), count(0.0), count(0.5)
    return pd.DataFrame({"n_battles": wins + losses + ties, "wins": wins, "losses": losses, "ties": ties},
                        index=pd.Index(battles.models, name="model"))


def compute_ratings(battles: Battles, bootstrap: int = 1000, anchor: str | None = None, seed: int = 0,
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
        ratings, low, high, style_table = _style_controlled(style_data(battles, style), bootstrap, at, seed, ridge)
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


def _style_controlled(data: StyleData, bootstrap: int, anchor: int, seed: int,
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
