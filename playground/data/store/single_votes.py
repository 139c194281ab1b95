"""Single votes (table `single_votes`): one response judged on its own, 👍 or 👎."""

from __future__ import annotations  # `SingleVotes.list` would shadow the builtin in the class's annotations

import json
from typing import Any

from playground.core.chat import voter_name
from playground.core.errors import PlaygroundError
from playground.data.db import Connection, IntegrityError
from playground.data.single_votes import SingleVote
from playground.data.store.database import Database, insert
from playground.data.votes import Response


def select_single_votes(db: Connection, where: str, params: list[Any]) -> list[SingleVote]:
    """The single votes matching `where`, in the order cast."""
    rows = db.execute(f"SELECT * FROM single_votes WHERE {where} ORDER BY id", params).fetchall()
    return [SingleVote(id=r["id"], prompt=json.loads(r["prompt"]), slot=r["slot"], label=bool(r["label"]),
                       response=Response(r["model"], r["text"], json.loads(r["scores"]), r["rated_as"]),
                       voter=r["voter"], settings=json.loads(r["settings"]), anonymous=bool(r["anonymous"]),
                       created_at=r["created_at"], item=r["item"]) for r in rows]


class SingleVotes:
    """The single votes of one `Database`."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def add(self, vote: SingleVote) -> int:
        """Store a 👍/👎 (its `id`, if any, is ignored) and return its new id. In the queue (`item`
        set), a voter's second single vote on the same model's response to a prompt is refused."""
        r = vote.response
        with self._database.transaction(write=True) as db:
            try:
                return insert(
                    db, "INSERT INTO single_votes (prompt, model, rated_as, text, scores, slot, label, voter, "
                    "settings, anonymous, created_at, item) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (json.dumps(vote.prompt), r.model, r.rated_as, r.text, json.dumps(r.scores), vote.slot,
                     int(vote.label), vote.voter, json.dumps(vote.settings), int(vote.anonymous), vote.created_at,
                     vote.item),
                )
            except IntegrityError:
                raise PlaygroundError(f"{vote.voter} has already given this response a 👍/👎") from None

    def list(self, voter: str | None = None) -> list[SingleVote]:
        """Single votes (👍/👎) in the order cast, optionally only one voter's."""
        where, params = ("voter = ?", [voter_name(voter)]) if voter is not None else ("TRUE", [])
        with self._database.transaction() as db:
            return select_single_votes(db, where, params)

    def counts_by_voter(self) -> dict[str, tuple[int, int]]:
        """(👍, 👎) single votes per voter."""
        with self._database.transaction() as db:
            rows = db.execute("SELECT voter, SUM(label), SUM(1 - label) FROM single_votes GROUP BY voter "
                              "ORDER BY voter").fetchall()
        return {voter: (up, down) for voter, up, down in rows}
