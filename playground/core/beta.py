"""β, the strength of the KL term in r = β·log(π_θ/π_ref) (DPO and its siblings, the implicit rewards
of every score): its default and its one check. Free of torch, so the command lines take their
`--beta` default and check from here and still answer `--help` at once."""

import math

from playground.core.errors import PlaygroundError

DEFAULT_BETA = 0.1
BETA_RULE = "β must be > 0"  # what every entry point says of a bad β


def beta_ok(beta: float) -> bool:
    """Whether `beta` is a usable β: a finite number > 0 (a bool is no number here)."""
    return not isinstance(beta, bool) and isinstance(beta, int | float) and math.isfinite(beta) and beta > 0


def check_beta(beta: float) -> float:
    """`beta` as a float; a `PlaygroundError` saying `BETA_RULE` when it is not `beta_ok`."""
    if not beta_ok(beta):
        raise PlaygroundError(f"{BETA_RULE} (got {beta!r})")
    return float(beta)
