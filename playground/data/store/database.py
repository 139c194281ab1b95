"""One open vote database: its backend (`playground.data.db`), migrated on open, and the two dialect
helpers the repositories' queries need (`insert`, `serialize`).

Threads: Gradio runs handlers in a thread pool, so one `Database` is shared between threads (one
SQLite connection under a lock, or a pool of PostgreSQL connections; see `playground.data.db`).
Other processes (`playground data` while the app runs, another app replica on the same server) use
their own connections; SQLite's WAL lets them read while the app writes, and the busy timeout makes
writers wait.
"""

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from playground.core.errors import PlaygroundError
from playground.data.db import Connection, Dialect, TrainingLock, open_backend
from playground.data.store.migrations import migrate


class Database:
    """The vote database at `location`: a SQLite file (a path or `sqlite:PATH`) or a
    `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB` database, brought to the current schema on open.
    A database that is none (a text file, a newer schema) is refused with a `PlaygroundError`."""

    def __init__(self, location: str | Path) -> None:
        self._backend = open_backend(location)
        self.path: Path | None = self._backend.path  # the SQLite file; None on a server
        self.location: str = self._backend.location  # safe to print: a path, or the URL without password
        self.dialect: Dialect = self._backend.dialect
        try:
            # In one write transaction, serialized, so two processes opening a new database do not both migrate it.
            with self.transaction(write=True) as db:
                serialize(db, "migrate")
                migrate(db, self.location)
        except PlaygroundError:
            self._backend.close()
            raise
        except self._backend.errors as exc:
            self._backend.close()
            kind = "SQLite" if self.dialect == "sqlite" else "PostgreSQL"
            raise PlaygroundError(f"{self.location}: not a usable {kind} vote database ({exc})") from None

    def transaction(self, write: bool = False) -> AbstractContextManager[Connection]:
        """One transaction: committed when the block ends, rolled back on an exception. `write` takes
        SQLite's write lock up front (a read lock upgraded later fails at once under contention)."""
        return self._backend.transaction(write)

    def training_lock(self) -> TrainingLock:
        """A new handle on the database's training lock (one run at a time over every process on
        this database; released by its holder, or by the server or kernel when the holder dies)."""
        return self._backend.training_lock()

    def close(self) -> None:
        self._backend.close()


# Query dialect: the two statements SQLite and PostgreSQL spell differently (the schema's: migrations.py).
def insert(db: Connection, sql: str, params: Sequence[Any]) -> int:
    """Insert one row into a table with an `id` column; its new id."""
    if db.dialect == "sqlite":
        return db.execute(sql, params).lastrowid
    return db.execute(f"{sql} RETURNING id", params).fetchone()[0]


def serialize(db: Connection, key: str) -> None:
    """Hold the transaction-long lock `key` before a check-then-write (is the schema new? has this
    voter voted here?): two writers with the same key run one after the other, whichever process
    they are in. SQLite needs nothing: its write transactions (BEGIN IMMEDIATE) run one at a time."""
    if db.dialect == "postgresql":
        db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"playground:{key}",))
