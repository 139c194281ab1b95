"""Judge battles (table `judge_battles`): automated comparisons, kept apart from human votes so a
leaderboard can include or leave them out."""

from __future__ import annotations  # `JudgeBattles.list` would shadow the builtin in the class's annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from playground.core.chat import Message
from playground.data.store.database import Database


@dataclass(frozen=True)
class JudgeBattle:
    """One stored battle: which judge decided it in which run, the prompt, both models (as rated)
    and their texts, the Arena `winner` and the judge's `details` (its numbers, both orders' verdicts)."""

    id: int
    judge: str  # e.g. "rule:shorter", "reward-model:rm-0001"
    run: str  # one judge run's id: battles judged together
    prompt: list[Message]
    model_a: str
    model_b: str
    text_a: str
    text_b: str
    winner: str  # playground.data.votes.ARENA_WINNERS
    details: dict[str, Any]
    created_at: float  # unix time


class JudgeBattles:
    """The judge battles of one `Database`, in the order stored."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def add(self, judge: str, run: str, battles: Sequence[Mapping[str, Any]]) -> int:
        """Store one judge run's battles, all or nothing. Each battle: prompt (messages), model_a,
        model_b, text_a, text_b, winner (an Arena winner value) and details (a JSON object)."""
        with self._database.transaction(write=True) as db:
            db.executemany(
                "INSERT INTO judge_battles (judge, run, prompt, model_a, model_b, text_a, text_b, winner, details, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(judge, run, json.dumps(b["prompt"]), b["model_a"], b["model_b"], b["text_a"], b["text_b"],
                  b["winner"], json.dumps(b.get("details", {})), time.time()) for b in battles],
            )
        return len(battles)

    def list(self, judge: str | None = None, run: str | None = None) -> list[JudgeBattle]:
        """The battles of one judge (and one of its runs), or of all, in the order stored."""
        conditions = [(column, value) for column, value in (("judge", judge), ("run", run)) if value is not None]
        where = "WHERE " + " AND ".join(f"{column} = ?" for column, _ in conditions) if conditions else ""
        params = [value for _, value in conditions]
        with self._database.transaction() as db:
            rows = db.execute("SELECT id, judge, run, prompt, model_a, model_b, text_a, text_b, winner, details, "
                              f"created_at FROM judge_battles {where} ORDER BY id", params).fetchall()
        return [JudgeBattle(r["id"], r["judge"], r["run"], json.loads(r["prompt"]), r["model_a"], r["model_b"],
                            r["text_a"], r["text_b"], r["winner"], json.loads(r["details"]), r["created_at"])
                for r in rows]

    def counts_by_judge(self) -> dict[str, int]:
        """Stored battles per judge, by judge name."""
        with self._database.transaction() as db:
            return dict(db.execute("SELECT judge, COUNT(*) FROM judge_battles GROUP BY judge ORDER BY judge"))
