"""Prompt sets (tables `prompt_sets`, `set_prompts`, `set_responses`): the prompts a voting queue
serves, how it shows them, and their pre-generated responses. The queue's votes are votes
(`playground.data.store.votes`)."""

from __future__ import annotations  # `PromptSets.list` would shadow the builtin in the class's annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from playground.core.errors import PlaygroundError
from playground.data.db import Connection
from playground.data.prompt_sets import PromptSet, SetPrompt, SetResponse
from playground.data.store.database import Database, insert, serialize


def _select_sets(db: Connection, where: str, params: list[Any]) -> list[PromptSet]:
    rows = db.execute(
        "SELECT id, name, source, overlap, guidelines, models, generation, created_at FROM prompt_sets "
        f"WHERE {where} ORDER BY created_at, id", params,
    ).fetchall()
    return [PromptSet(r["id"], r["name"], r["source"], r["overlap"], r["guidelines"],
                      tuple(json.loads(r["models"])), json.loads(r["generation"]), r["created_at"]) for r in rows]


class PromptSets:
    """The prompt sets of one `Database`, their prompts and their stored responses."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def add(self, name: str, source: str, prompts: Sequence[SetPrompt], overlap: int = 1) -> PromptSet:
        """Store a new prompt set and its prompts (positions in the order given), all or nothing."""
        with self._database.transaction(write=True) as db:
            serialize(db, f"prompt set {name}")
            if db.execute("SELECT 1 FROM prompt_sets WHERE name = ?", (name,)).fetchone():
                raise PlaygroundError(f"a prompt set named {name!r} exists already; choose another name")
            set_id = insert(db, "INSERT INTO prompt_sets (name, source, overlap, created_at) VALUES (?, ?, ?, ?)",
                            (name, source, overlap, time.time()))
            db.executemany(
                "INSERT INTO set_prompts (set_id, position, ref, prompt, category) VALUES (?, ?, ?, ?, ?)",
                [(set_id, i, p.ref, json.dumps(p.messages), p.category) for i, p in enumerate(prompts)],
            )
            return _select_sets(db, "id = ?", [set_id])[0]

    def list(self) -> list[PromptSet]:
        """Every prompt set, oldest first."""
        with self._database.transaction() as db:
            return _select_sets(db, "TRUE", [])

    def get(self, name: str) -> PromptSet:
        """The set called `name`; `PlaygroundError` naming the sets there are if there is none."""
        with self._database.transaction() as db:
            found = _select_sets(db, "name = ?", [name])
            if found:
                return found[0]
            names = [r[0] for r in db.execute("SELECT name FROM prompt_sets ORDER BY name")]
        raise PlaygroundError(f"no prompt set named {name!r}; there are: {', '.join(names) or 'none yet'}")

    def _update(self, set_id: int, column: str, value: Any) -> None:
        with self._database.transaction(write=True) as db:
            if db.execute(f"UPDATE prompt_sets SET {column} = ? WHERE id = ?", (value, set_id)).rowcount != 1:
                raise PlaygroundError(f"prompt set #{set_id} no longer exists")

    def set_overlap(self, set_id: int, overlap: int) -> None:
        self._update(set_id, "overlap", overlap)

    def set_guidelines(self, set_id: int, guidelines: str) -> None:
        self._update(set_id, "guidelines", guidelines)

    def set_queue_models(self, set_id: int, models: Sequence[str], generation: dict[str, Any]) -> None:
        """The models the set's queue compares and how their responses are generated, in one write."""
        with self._database.transaction(write=True) as db:
            db.execute("UPDATE prompt_sets SET models = ?, generation = ? WHERE id = ?",
                       (json.dumps(list(models)), json.dumps(generation), set_id))

    def prompts(self, set_id: int) -> list[SetPrompt]:
        """The set's prompts in file order."""
        with self._database.transaction() as db:
            rows = db.execute("SELECT id, position, ref, prompt, category FROM set_prompts WHERE set_id = ? "
                              "ORDER BY position", (set_id,)).fetchall()
        return [SetPrompt(r["ref"], json.loads(r["prompt"]), r["category"], r["id"], r["position"]) for r in rows]

    def categories(self) -> dict[int, tuple[Any, str]]:
        """Every set prompt that has a category, {prompt id: (its messages, category)}: what votes
        (by `Vote.item`) and judge battles (by their prompt) are grouped by on the Dashboard."""
        with self._database.transaction() as db:
            rows = db.execute("SELECT id, prompt, category FROM set_prompts WHERE category IS NOT NULL").fetchall()
        return {r["id"]: (json.loads(r["prompt"]), r["category"]) for r in rows}

    def add_responses(self, responses: Sequence[SetResponse]) -> int:
        """Store pre-generated responses in one transaction; a (prompt, model) that already has one
        keeps it (ON CONFLICT DO NOTHING), so a resumed or concurrent job never replaces what voters
        saw. Returns how many were new."""
        with self._database.transaction(write=True) as db:
            return db.executemany(
                "INSERT INTO set_responses (prompt_id, model, text, scores, settings, created_at, rated_as) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(r.prompt_id, r.model, r.text, json.dumps(r.scores), json.dumps(r.settings), time.time(), r.rated_as)
                 for r in responses],
            ).rowcount

    def responses(self, prompt_id: int) -> dict[str, SetResponse]:
        """One prompt's stored responses by model."""
        with self._database.transaction() as db:
            rows = db.execute("SELECT model, text, scores, settings, rated_as FROM set_responses WHERE prompt_id = ?",
                              (prompt_id,)).fetchall()
        return {r["model"]: SetResponse(prompt_id, r["model"], r["text"], json.loads(r["scores"]),
                                        json.loads(r["settings"]), r["rated_as"]) for r in rows}

    def response_models(self, set_id: int) -> dict[int, set[str]]:
        """For each prompt of the set with stored responses, the models they are from."""
        with self._database.transaction() as db:
            rows = db.execute("SELECT r.prompt_id, r.model FROM set_responses r JOIN set_prompts p "
                              "ON p.id = r.prompt_id WHERE p.set_id = ?", (set_id,)).fetchall()
        models: dict[int, set[str]] = {}
        for prompt_id, model in rows:
            models.setdefault(prompt_id, set()).add(model)
        return models
