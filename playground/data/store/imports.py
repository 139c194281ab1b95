"""Imported preference data (tables `import_batches`, `imported_pairs`, `imported_unpaired`): rows
read from files, each file's rows one batch, stored whole or not at all."""

import json
import time
from typing import Any

from playground.data.rows import PreferenceRow, UnpairedRow
from playground.data.store.database import Database, insert


class Imports:
    """The imported pairs and unpaired rows of one `Database`, in the order imported."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def add_pairs(self, rows: list[PreferenceRow], source: str) -> int:
        """Add preference rows read from the file named `source`, all in one transaction."""
        return self._add_batch(
            source, "INSERT INTO imported_pairs (batch_id, prompt, chosen, rejected, extra) VALUES (?, ?, ?, ?, ?)",
            # default=str: Parquet extras can hold dates or bytes; kept as text rather than refused.
            [(json.dumps(r.prompt), json.dumps(r.chosen), json.dumps(r.rejected), json.dumps(r.extra, default=str))
             for r in rows])

    def add_unpaired(self, rows: list[UnpairedRow], source: str) -> int:
        """Add unpaired rows (prompt, completion, label) read from the file named `source`, in one transaction."""
        return self._add_batch(
            source, "INSERT INTO imported_unpaired (batch_id, prompt, completion, label, extra) VALUES (?, ?, ?, ?, ?)",
            [(json.dumps(r.prompt), json.dumps(r.completion), int(r.label), json.dumps(r.extra, default=str))
             for r in rows])

    def _add_batch(self, source: str, insert_row: str, values: list[tuple[Any, ...]]) -> int:
        """One import, all or nothing: a batch row naming `source`, then each row's `values` after its id."""
        if not values:
            return 0
        with self._database.transaction(write=True) as db:
            batch = insert(db, "INSERT INTO import_batches (source, created_at) VALUES (?, ?)", (source, time.time()))
            db.executemany(insert_row, [(batch, *v) for v in values])
        return len(values)

    def pairs(self) -> list[PreferenceRow]:
        with self._database.transaction() as db:
            rows = db.execute("SELECT prompt, chosen, rejected, extra FROM imported_pairs ORDER BY id").fetchall()
        return [PreferenceRow(*(json.loads(value) for value in row)) for row in rows]

    def unpaired(self) -> list[UnpairedRow]:
        with self._database.transaction() as db:
            rows = db.execute("SELECT prompt, completion, label, extra FROM imported_unpaired ORDER BY id").fetchall()
        return [UnpairedRow(json.loads(r["prompt"]), json.loads(r["completion"]), bool(r["label"]),
                            json.loads(r["extra"])) for r in rows]
