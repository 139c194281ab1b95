"""The checkpoint registry (table `checkpoints`) and the serving setting (table `shared_settings`):
what every app replica on one database must agree on about trained checkpoints."""

from __future__ import annotations  # `Checkpoints.list` would shadow the builtin in the class's annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.data.store.database import Database

SERVING_KEY = "serving"  # shared_settings: the checkpoint id serving as the policy


@dataclass(frozen=True)
class RegisteredCheckpoint:
    """A checkpoint as registered: its id (the folder's name), folder, parent checkpoint (None: trained
    from the SFT model), registration time (unix) and `record.json` as written. The typed view of
    the record is `playground.models.checkpoints.CheckpointRecord.registered`."""

    id: str
    path: Path
    parent: str | None
    created_at: float
    record: dict[str, Any]


class Checkpoints:
    """The registered checkpoints of one `Database`, and which of them serves as the policy."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def register(self, checkpoint_id: str, path: Path, parent: str | None, record: dict[str, Any]) -> None:
        """Record a finished checkpoint (written before, atomically, by `checkpoints.write_checkpoint`);
        registering an id again replaces its row."""
        with self._database.transaction(write=True) as db:
            db.execute("INSERT INTO checkpoints (id, path, parent, created_at, record) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET path = excluded.path, parent = excluded.parent, "
                       "created_at = excluded.created_at, record = excluded.record",
                       (checkpoint_id, str(path), parent, time.time(), json.dumps(record)))

    def list(self) -> list[RegisteredCheckpoint]:
        """Registered checkpoints, oldest first."""
        with self._database.transaction() as db:
            rows = db.execute("SELECT id, path, parent, created_at, record FROM checkpoints "
                              "ORDER BY created_at, id").fetchall()
        return [RegisteredCheckpoint(r["id"], Path(r["path"]), r["parent"], r["created_at"], json.loads(r["record"]))
                for r in rows]

    def folders(self) -> dict[str, Path]:
        """Each registered checkpoint's folder by id, oldest first: `list` without the records (what
        a replica's every round reads, so kept small)."""
        with self._database.transaction() as db:
            rows = db.execute("SELECT id, path FROM checkpoints ORDER BY created_at, id").fetchall()
        return {r["id"]: Path(r["path"]) for r in rows}

    def set_serving(self, checkpoint: str | None) -> None:
        """Record the checkpoint serving as the policy, for every replica (None: no checkpoint serves)."""
        with self._database.transaction(write=True) as db:
            if checkpoint is None:
                db.execute("DELETE FROM shared_settings WHERE key = ?", (SERVING_KEY,))
                return
            db.execute("INSERT INTO shared_settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) "
                       "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                       (SERVING_KEY, json.dumps(checkpoint), time.time()))

    def serving(self) -> str | None:
        """The checkpoint recorded as serving (`set_serving`), None when none is."""
        with self._database.transaction() as db:
            row = db.execute("SELECT value FROM shared_settings WHERE key = ?", (SERVING_KEY,)).fetchone()
        return json.loads(row["value"]) if row else None
