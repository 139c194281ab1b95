"""The numerics every logistic fit in `evals` shares (Bradley–Terry ratings, style control, the
length-controlled win rate): σ, the ridge, per-model sums of per-pair values, and a batched, damped
Newton's method with its step cap and stopping rule.

Each fit maximises a concave log-posterior: a logistic log-likelihood plus the ridge −(λ/2)|x|²,
a N(0, 1/λ) prior that keeps the optimum finite where the data alone have none (a model that never
lost, groups that never met, `evals.ratings.bradley_terry`). With λ > 0 the Hessian of −ℓ is
positive definite, so Newton's step H⁻¹g always exists; capping it at MAX_STEP log-odds keeps the
first steps from overshooting towards such an optimum far out.
"""

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

RIDGE = 1e-3  # λ: prior sd ≈ 31.6 log-odds ≈ 5500 Elo, negligible wherever the data speak
MAX_NEWTON_STEPS = 200
NEWTON_TOL = 1e-10  # largest |Δθ| in log-odds (≈ 2e-8 Elo); Newton converges quadratically, so one more step is exact
MAX_STEP = 4.0  # log-odds per Newton step: damps the first steps towards a model with (almost) no losses


def sigmoid(x: FloatArray) -> FloatArray:
    """σ(x) = 1 / (1 + e^−x), written with tanh so large |x| neither overflows nor warns."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def per_model(values: FloatArray, index: IntArray, m: int) -> FloatArray:
    """Sum (R, P) per-pair values into (R, M) per-model totals at `index` (a pair's i or j)."""
    r = values.shape[0]
    flat = (np.arange(r)[:, None] * m + index[None, :]).ravel()
    return np.bincount(flat, weights=values.ravel(), minlength=r * m).reshape(r, m)


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
