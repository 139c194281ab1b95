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

Length-controlled win rate (AlpacaEval 2's method, its "minimal" formula without the instruction
difficulty term): over the battles of model m against the baseline, with Δ_k the model's answer
length minus the baseline's and s the standard deviation of Δ over those battles,

    P(m beats baseline in battle k) = σ(θ + φ · tanh(Δ_k / s)),

fitted by maximum likelihood (ties as half a win, the ridge of `evals.ratings.newton` on θ and φ), and
the LC win rate is the prediction at zero length difference, σ(θ): the win rate m would have if
its answers were as long as the baseline's. Its 95% interval is the 2.5 and 97.5 percentiles of
σ(θ) over `bootstrap` refits on resampled votes (`evals.battle.vote_key`: a ranking's battles
stay together), seeded. Lengths are the battles' `len_a`/`len_b` (characters, as the store's
battles carry) or else their conv_metadata token counts (Arena rows): one unit per fit, and the
standardisation makes the unit irrelevant.

When one model's answers are longer than the baseline's in *every* battle, Δ never comes near 0
and σ(θ) is an extrapolation of the fitted curve: an equal-skill model always ~200 tokens longer
can show a raw rate of 0.73 and a per-pair LC rate of 0.09 with an interval of [0.004, 0.66].
AlpacaEval flags such changes; Chatbot Arena's style control avoids them by fitting the length
coefficient once over all battles, where other pairs' lengths do vary. So beside the per-pair
figure stands the *joint* LC win rate: one Bradley–Terry fit over every battle of every pair,

    P(a beats b) = σ(θ_a − θ_b + φ · tanh(Δ_k / s)),   Δ_k = len_a − len_b, s over all battles,

(the style-controlled model of `evals.ratings.style` with length as its one covariate), read at
equal length: σ(θ_m − θ_baseline), its interval from the same bootstrap over votes. The per-pair
row carries `lc_warning` when the pair's length differences do not cover 0 or its interval is
wider than `LC_WIDE_INTERVAL`.

`playground winrate --battles FILE --baseline M [--length-controlled] --out OUT.json`.
"""

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from evals.agreement import count_votes, dependent_pairs_note, wilson_interval
from evals.battle import Battle, models_in, vote_key
from evals.ratings.indexed import index_battles
from evals.ratings.newton import MAX_NEWTON_STEPS, MAX_STEP, NEWTON_TOL, RIDGE, FloatArray, sigmoid
from evals.ratings.style import bootstrap_style, fit_style_strengths, style_data
from playground.core.errors import PlaygroundError
from playground.data.style import style_totals
from playground.data.votes import win_score

LC_CHUNK_FLOATS = 1 << 22  # bootstrap rounds × battles per batched fit (32 MiB of float64 per array)
# A per-pair LC interval wider than this (in win rate) says little about the model: the row is flagged.
LC_WIDE_INTERVAL = 0.3
JOINT_LC_KEYS = ("joint_lc_win_rate", "joint_lc_ci_low", "joint_lc_ci_high")


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
    n_votes: int  # the votes the n battles came from (`evals.battle.vote_key`)
    note: str | None  # set when n_votes < n: the interval is too narrow


def win_rate(battles: Sequence[Battle], model: str, baseline: str) -> WinRate:
    """`model`'s win rate against `baseline` over their battles (either side); mean lengths over
    the battles that know both answers' lengths."""
    scores: list[float] = []  # the model's score in each battle: 1, ½ or 0
    own, other, vote_ids = [], [], []
    for b in battles:
        if {b.model_a, b.model_b} != {model, baseline}:  # none if model == baseline: a battle is two models
            continue
        side = 0 if b.model_a == model else 1
        scores.append(win_score(b.winner) if side == 0 else 1.0 - win_score(b.winner))
        vote_ids.append(vote_key(b))
        lengths = _lengths(b)
        if lengths is not None:
            own.append(lengths[side])
            other.append(lengths[1 - side])
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


def win_rate_table(battles: Sequence[Battle], baseline: str) -> pd.DataFrame:
    """Every other model's win rate against `baseline`, best first."""
    rows = [win_rate(battles, m, baseline) for m in models_in(battles) if m != baseline]
    table = pd.DataFrame([r.__dict__ for r in rows if r.n > 0], columns=list(WinRate.__dataclass_fields__))
    return table.sort_values("rate", ascending=False, ignore_index=True)


def checkpoint_timeline(battles: Sequence[Battle], checkpoints: Sequence[Mapping[str, Any]],
                        baseline: str = "sft") -> pd.DataFrame:
    """Each checkpoint's win rate against `baseline`, in the order the checkpoints were made
    (`checkpoints` as `store.checkpoints.list()` lists them); checkpoints without battles are left out."""
    rows = []
    for c in checkpoints:
        r = win_rate(battles, c.id, baseline)
        if r.n:
            rows.append({"checkpoint": c.id, "created_at": c.created_at, **r.__dict__})
    return pd.DataFrame(rows, columns=["checkpoint", "created_at", *WinRate.__dataclass_fields__])


# ------------------------------------------------------------------------- length-controlled win rate


@dataclass(frozen=True)
class LengthControlled:
    model: str
    baseline: str
    n: int  # battles between the two
    n_votes: int  # the votes they came from, the unit the bootstrap resamples
    win_rate: float  # raw: (wins + ½ ties) / n
    lc_win_rate: float  # σ(θ): predicted at zero length difference
    lc_ci_low: float | None  # None without bootstrap
    lc_ci_high: float | None
    length_coefficient: float  # φ: log-odds per unit of tanh(Δ/s); > 0: longer answers win more
    length_scale: float  # s, in the lengths' unit
    lc_warning: str | None  # why σ(θ) should not be read alone (`lc_warning`); None: no reason found


def _lengths(battle: Battle) -> tuple[float, float] | None:
    if battle.len_a is None or battle.len_b is None:
        return None
    return float(battle.len_a), float(battle.len_b)


def fit_length_model(u: FloatArray, y: FloatArray, weights: FloatArray, ridge: float = RIDGE) -> FloatArray:
    """(θ, φ) per row of `weights` (R, n): maximum of Σ_k w_k [y_k log σ(η_k) + (1 − y_k) log σ(−η_k)]
    − (λ/2)(θ² + φ²), η_k = θ + φ u_k, by Newton with the 2×2 system solved in closed form."""
    theta, phi = np.zeros(len(weights)), np.zeros(len(weights))
    for _ in range(MAX_NEWTON_STEPS):
        p = sigmoid(theta[:, None] + phi[:, None] * u)
        resid, curv = weights * (y - p), weights * p * (1.0 - p)
        g0, g1 = resid.sum(axis=1) - ridge * theta, resid @ u - ridge * phi
        h00, h01, h11 = curv.sum(axis=1) + ridge, curv @ u, curv @ (u * u) + ridge
        det = h00 * h11 - h01 * h01
        step = np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det])
        biggest = np.abs(step).max(axis=0)
        step *= np.minimum(1.0, MAX_STEP / np.maximum(biggest, 1e-300))
        theta, phi = theta + step[0], phi + step[1]
        if biggest.max() < NEWTON_TOL:
            return np.stack([theta, phi], axis=1)
    raise RuntimeError(f"Newton's method did not converge in {MAX_NEWTON_STEPS} steps")


def length_controlled_win_rate(battles: Sequence[Battle], model: str, baseline: str,
                               bootstrap: int = 1000, seed: int = 0) -> LengthControlled | None:
    """`model`'s raw and length-controlled win rate against `baseline` (module docstring); None
    when the two never met. Every battle between them needs both answers' lengths."""
    y, own, other, keys = [], [], [], []
    for n, b in enumerate(battles):
        if {b.model_a, b.model_b} != {model, baseline}:  # none if model == baseline: a battle is two models
            continue
        lengths = _lengths(b)
        if lengths is None:
            raise PlaygroundError(f"battle {n + 1} ({b.model_a} vs {b.model_b}): no answer lengths (len_a and "
                                  "len_b, or conv_metadata); the length-controlled win rate needs them")
        side = 0 if b.model_a == model else 1
        y.append(win_score(b.winner) if side == 0 else 1.0 - win_score(b.winner))
        own.append(lengths[side])
        other.append(lengths[1 - side])
        key = vote_key(b)
        keys.append(key if key is not None else ("row", n))
    if not y:
        return None
    scores = np.array(y)
    delta = np.array(own) - np.array(other)
    scale = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    scale = scale if scale > 0 else 1.0  # all lengths equal: u = 0, the ridge keeps φ at 0
    u = np.tanh(delta / scale)
    theta, phi = fit_length_model(u, scores, np.ones((1, len(u))))[0]
    votes: dict[Hashable, int] = {}
    vote = np.array([votes.setdefault(k, len(votes)) for k in keys])
    low = high = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        per_chunk = max(1, LC_CHUNK_FLOATS // len(u))
        rates = []
        for first in range(0, bootstrap, per_chunk):
            size = min(per_chunk, bootstrap - first)
            weights = np.stack([np.bincount(rng.integers(0, len(votes), len(votes)), minlength=len(votes))[vote]
                                for _ in range(size)]).astype(np.float64)
            rates.append(sigmoid(fit_length_model(u, scores, weights)[:, 0]))
        low, high = (float(v) for v in np.percentile(np.concatenate(rates), [2.5, 97.5]))
    return LengthControlled(model, baseline, len(u), len(votes), float(scores.mean()), float(sigmoid(theta)),
                            low, high, float(phi), scale, lc_warning(delta, low, high))


def lc_warning(delta: FloatArray, low: float | None, high: float | None) -> str | None:
    """Why a per-pair LC win rate is unreliable, or None: the model's answers were longer (or
    shorter) than the baseline's in every battle, so σ(θ) at Δ = 0 lies outside the data; or the
    bootstrap interval is wider than `LC_WIDE_INTERVAL`."""
    reasons = []
    if len(delta) and (delta.min() > 0 or delta.max() < 0):
        side = "longer" if delta.min() > 0 else "shorter"
        reasons.append(f"the answers were {side} than the baseline's in every battle (Δ {delta.min():+.0f} to "
                       f"{delta.max():+.0f}): the rate at equal length is an extrapolation")
    if low is not None and high is not None and high - low > LC_WIDE_INTERVAL:
        reasons.append(f"the 95% interval [{low:.3f}, {high:.3f}] is wider than {LC_WIDE_INTERVAL}")
    return "; ".join(reasons) + "; read the joint LC win rate" if reasons else None


@dataclass(frozen=True)
class JointLengthControlled:
    """Every model's win rate against the baseline at equal length from one fit over all battles
    (module docstring): rates and interval bounds by model name (the baseline itself left out)."""

    baseline: str
    rate: Mapping[str, float]
    ci_low: Mapping[str, float | None]
    ci_high: Mapping[str, float | None]
    length_coefficient: float  # φ over all battles
    length_scale: float  # s over all battles


def joint_length_controlled(battles: Sequence[Battle], baseline: str, bootstrap: int = 1000,
                            seed: int = 0) -> JointLengthControlled:
    """The joint LC win rate of every model against `baseline` (module docstring); every battle
    needs both answers' lengths (`with_lengths`)."""
    lengths = [_lengths(b) for b in battles]
    missing = next((n for n, pair in enumerate(lengths) if pair is None), None)
    if missing is not None:
        raise PlaygroundError(f"battle {missing + 1}: no answer lengths; the joint length-controlled win rate "
                              "needs them on every battle")
    delta = np.array([pair[0] - pair[1] for pair in lengths if pair is not None])
    scale = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    scale = scale if scale > 0 else 1.0
    indexed = index_battles(battles)
    data = style_data(indexed, np.tanh(delta / scale)[:, None])
    m = len(indexed.models)
    fit = fit_style_strengths(data)
    base = indexed.models.index(baseline)
    others = [k for k in range(m) if k != base]
    rate = {indexed.models[k]: float(sigmoid(fit[0, k] - fit[0, base])) for k in others}
    low: dict[str, float | None] = dict.fromkeys(rate)
    high: dict[str, float | None] = dict.fromkeys(rate)
    if bootstrap:
        rounds = bootstrap_style(data, bootstrap, seed, start=fit)
        for k in others:
            low[indexed.models[k]], high[indexed.models[k]] = (
                float(v) for v in np.percentile(sigmoid(rounds[:, k] - rounds[:, base]), [2.5, 97.5]))
    return JointLengthControlled(baseline, rate, low, high, float(fit[0, m]), scale)


def with_lengths(battles: Sequence[Battle]) -> list[Battle]:
    """The battles with `len_a`/`len_b`: as given where every battle has them, else from
    conv_metadata's token counts where every battle has those (one unit for all); otherwise
    unchanged (the fit then names the first battle without lengths)."""
    if all(_lengths(b) is not None for b in battles) or any(b.conv_metadata is None for b in battles):
        return list(battles)
    return [replace(b, len_a=style_totals(b.conv_metadata, "a", f"battle {n + 1}")[0],
                    len_b=style_totals(b.conv_metadata, "b", f"battle {n + 1}")[0]) for n, b in enumerate(battles)]


def length_controlled_table(battles: Sequence[Battle], baseline: str, bootstrap: int = 1000,
                            seed: int = 0) -> pd.DataFrame:
    """Every other model's raw and length-controlled win rate against `baseline`, best LC first;
    columns as `LengthControlled`, plus the raw rate's Wilson interval (ci_low, ci_high) and the
    joint LC win rate with its interval (`joint_length_controlled`: joint_lc_win_rate,
    joint_lc_ci_low, joint_lc_ci_high)."""
    battles = with_lengths(battles)
    rows = []
    joint = joint_length_controlled(battles, baseline, bootstrap, seed) if baseline in models_in(battles) else None
    for m in models_in(battles):
        lc = length_controlled_win_rate(battles, m, baseline, bootstrap, seed) if m != baseline else None
        if lc is not None and joint is not None:
            raw = win_rate(battles, m, baseline)
            rows.append({**lc.__dict__, "ci_low": raw.ci_low, "ci_high": raw.ci_high,
                         "joint_lc_win_rate": joint.rate[m], "joint_lc_ci_low": joint.ci_low[m],
                         "joint_lc_ci_high": joint.ci_high[m]})
    columns = [*LengthControlled.__dataclass_fields__, "ci_low", "ci_high", *JOINT_LC_KEYS]
    return pd.DataFrame(rows, columns=columns).sort_values("lc_win_rate", ascending=False, ignore_index=True)
