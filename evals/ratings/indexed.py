"""Battles as index arrays, the form every rating fit reads: `IndexedBattles`, made from `Battle`
records by `index_battles`.

Models are numbered in sorted name order and votes renumbered 0..V−1, so nothing a fit computes
depends on the order the battles came in or on the vote ids' values; the battles themselves keep
their order (online Elo follows it).
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from evals.battle import Battle, vote_key
from evals.ratings.newton import FloatArray, IntArray
from playground.core.errors import PlaygroundError
from playground.data.votes import ARENA_A, ARENA_B, ARENA_TIE, win_score

# A battle's score for one side, per outcome cell of a pair's lower-index model i: i won, tie, j won.
OUTCOME_SCORE = np.array([win_score(ARENA_A), win_score(ARENA_TIE), win_score(ARENA_B)])


@dataclass(frozen=True, eq=False)
class IndexedBattles:
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
            raise ValueError("IndexedBattles.models must be sorted and unique")
        if not (a.ndim == b.ndim == score.ndim == vote.ndim == 1 and len(a) == len(b) == len(score) == len(vote)):
            raise ValueError("IndexedBattles.a, .b, .score_a and .vote must be 1-D arrays of one length")
        m = len(self.models)
        if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= m or (a == b).any()):
            raise ValueError("IndexedBattles.a and .b must index two different models")
        if not np.isin(score, OUTCOME_SCORE).all():
            raise ValueError("IndexedBattles.score_a must hold 0, 0.5 or 1")
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


def index_battles(battles: Sequence[Battle]) -> IndexedBattles:
    """The battles as `IndexedBattles`: models sorted by name, battles kept in order; battles with
    the same `vote_key` are one vote, a battle without one a vote of its own."""
    if not battles:
        raise PlaygroundError("no battles")
    names = np.array([b.model_a for b in battles] + [b.model_b for b in battles])
    models, index = np.unique(names, return_inverse=True)
    score = np.fromiter((win_score(b.winner) for b in battles), dtype=np.float64, count=len(battles))
    votes: dict[Hashable, int] = {}
    vote = [votes.setdefault(key if key is not None else ("row", n), len(votes))
            for n, key in enumerate(map(vote_key, battles))]
    n = len(battles)
    return IndexedBattles(tuple(str(m) for m in models), index[:n], index[n:], score, np.array(vote, dtype=np.int64))
