"""Online Elo, the classic sequential update, shown on the leaderboard beside the Bradley–Terry ratings."""

from evals.ratings.indexed import IndexedBattles


def online_elo(battles: IndexedBattles, k: float = 4.0, base: float = 10.0, scale: float = 400.0,
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

