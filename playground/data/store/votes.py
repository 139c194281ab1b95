"""Pairwise and ranked votes (tables `votes` and `responses`): the playground's votes and the voting
queue's, which name their prompt-set prompt (`Vote.item`)."""

from __future__ import annotations  # `Votes.list` would shadow the builtin in the class's annotations

import itertools
import json
from typing import Any

from playground.core.chat import voter_name
from playground.core.errors import PlaygroundError
from playground.data.db import Connection, Row
from playground.data.store.database import Database, insert, serialize
from playground.data.votes import Response, Vote

_VOTE_COLUMNS = """v.id, v.prompt, v.outcome, v.voter, v.settings, v.anonymous, v.created_at, v.item,
    r.slot, r.model, r.text, r.scores, r.rank, r.rated_as"""


def _votes_from(rows: list[Row]) -> list[Vote]:
    """Votes from the join of votes and responses, ordered by vote id then slot."""
    votes = []
    for _, group in itertools.groupby(rows, key=lambda row: row["id"]):
        rs = list(group)
        head = rs[0]
        ranked = sorted((r["rank"], r["slot"]) for r in rs if r["rank"] is not None)
        votes.append(Vote(
            id=head["id"],
            prompt=json.loads(head["prompt"]),
            responses=tuple(Response(r["model"], r["text"], json.loads(r["scores"]), r["rated_as"]) for r in rs),
            outcome=head["outcome"],
            ranking=tuple(slot for _, slot in ranked) if head["outcome"] == "ranking" else None,
            voter=head["voter"],
            settings=json.loads(head["settings"]),
            anonymous=bool(head["anonymous"]),
            created_at=head["created_at"],
            item=head["item"],
        ))
    return votes


def select_votes(db: Connection, where: str, params: list[Any]) -> list[Vote]:
    """The votes matching `where` (over `votes v`), in the order cast."""
    rows = db.execute(
        f"SELECT {_VOTE_COLUMNS} FROM votes v JOIN responses r ON r.vote_id = v.id "
        f"WHERE {where} ORDER BY v.id, r.slot",
        params,
    ).fetchall()
    return _votes_from(rows)


def _insert_vote(db: Connection, vote: Vote) -> int:
    place = {slot: p for p, slot in enumerate(vote.ranking or ())}
    vote_id = insert(
        db, "INSERT INTO votes (prompt, outcome, voter, settings, anonymous, created_at, item) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (json.dumps(vote.prompt), vote.outcome, vote.voter, json.dumps(vote.settings),
         int(vote.anonymous), vote.created_at, vote.item),
    )
    db.executemany(
        "INSERT INTO responses (vote_id, slot, model, text, scores, rank, rated_as) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(vote_id, slot, r.model, r.text, json.dumps(r.scores), place.get(slot), r.rated_as)
         for slot, r in enumerate(vote.responses)],
    )
    return vote_id


DAY = 86_400  # seconds: vote caps count per UTC day, as Chatbot Arena's `limit_user_votes` counts per date


def _cast_on_day(db: Connection, voter: str, when: float) -> int:
    start = when - when % DAY
    return db.execute("SELECT COUNT(*) FROM votes WHERE voter = ? AND created_at >= ? AND created_at < ?",
                      (voter, start, start + DAY)).fetchone()[0]


def _check_daily_cap(db: Connection, vote: Vote, cap: int | None) -> None:
    """Refuse `vote` when its voter already cast `cap` pairwise votes on its UTC day (None: no cap).
    Serialised per voter, so two replicas or two tabs cannot both take the last vote of the day."""
    if cap is None:
        return
    serialize(db, f"daily votes {vote.voter}")
    cast = _cast_on_day(db, vote.voter, vote.created_at)
    if cast >= cap:
        raise PlaygroundError(f"{vote.voter} has cast {cast} votes today (UTC), the most this server takes from one "
                              f"voter in a day (--max-votes-per-day {cap}); nothing was stored")


class Votes:
    """The votes of one `Database`."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def add(self, vote: Vote, daily_cap: int | None = None) -> int:
        """Store a vote (its `id`, if any, is ignored) and return its new id; refused when its voter
        already cast `daily_cap` votes on the vote's UTC day (`_check_daily_cap`)."""
        with self._database.transaction(write=True) as db:
            _check_daily_cap(db, vote, daily_cap)
            return _insert_vote(db, vote)

    def add_queue_vote(self, vote: Vote, daily_cap: int | None = None) -> int:
        """Store a vote from the voting queue, refused when its voter already voted on that prompt,
        or already cast `daily_cap` votes that day.

        The checks and the insert share one write transaction, so a double click or a second tab
        cannot slip a second vote in. The overlap is not checked here: a vote cast on a prompt
        that others completed meanwhile is still a person's judgement, and is kept.
        """
        if vote.item is None:
            raise PlaygroundError("a queue vote must name its prompt (item)")
        with self._database.transaction(write=True) as db:
            serialize(db, f"queue vote {vote.item} {vote.voter}")
            if db.execute("SELECT 1 FROM votes WHERE item = ? AND voter = ?", (vote.item, vote.voter)).fetchone():
                raise PlaygroundError(f"{vote.voter} has already voted on this prompt; take the next one")
            _check_daily_cap(db, vote, daily_cap)
            return _insert_vote(db, vote)

    def cast_on_day(self, voter: str, when: float) -> int:
        """How many pairwise votes `voter` cast on the UTC day of unix time `when`."""
        with self._database.transaction() as db:
            return _cast_on_day(db, voter, when)

    def list(self, voter: str | None = None, model: str | None = None, since: float | None = None) -> list[Vote]:
        """Votes in the order cast, optionally only one voter's, those showing `model`, or those
        cast at or after unix time `since`."""
        where, params = ["TRUE"], []
        if voter is not None:
            where.append("v.voter = ?")
            params.append(voter_name(voter))
        if model is not None:
            where.append("v.id IN (SELECT vote_id FROM responses WHERE model = ?)")
            params.append(model)
        if since is not None:
            where.append("v.created_at >= ?")
            params.append(since)
        with self._database.transaction() as db:
            return select_votes(db, " AND ".join(where), params)

    def in_set(self, set_id: int) -> list[Vote]:
        """The queue votes on the prompts of prompt set `set_id`, in the order cast."""
        with self._database.transaction() as db:
            return select_votes(db, "v.item IN (SELECT id FROM set_prompts WHERE set_id = ?)", [set_id])

    def voters_by_item(self, set_id: int) -> dict[int, list[str]]:
        """For each prompt of set `set_id` with votes, its voters in the order they voted (a name
        appears once per vote)."""
        with self._database.transaction() as db:
            rows = db.execute("SELECT v.item, v.voter FROM votes v JOIN set_prompts p ON p.id = v.item "
                              "WHERE p.set_id = ? ORDER BY v.id", (set_id,)).fetchall()
        voters: dict[int, list[str]] = {}
        for item, voter in rows:
            voters.setdefault(item, []).append(voter)
        return voters

    def counts_by_voter(self) -> dict[str, int]:
        """Pairwise votes per voter."""
        with self._database.transaction() as db:
            return dict(db.execute("SELECT voter, COUNT(*) FROM votes GROUP BY voter ORDER BY voter").fetchall())

    def counts_by_model(self) -> dict[str, int]:
        """How many responses from each model have been voted on."""
        with self._database.transaction() as db:
            return dict(db.execute("SELECT model, COUNT(*) FROM responses GROUP BY model ORDER BY model").fetchall())
