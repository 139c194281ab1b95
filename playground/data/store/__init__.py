"""The vote store: every kind of stored data behind one database, a SQLite file or a PostgreSQL database.

`store = open_store(location)` opens (and migrates) the database and gives one repository per kind
of data, each a small class over the same `Database`:

    store.database      `database.Database`: location, dialect, transactions, the training lock
    store.votes         `votes.Votes`: pairwise and ranked votes, the queue's included
    store.single_votes  `single_votes.SingleVotes`: 👍/👎 on one response
    store.imports       `imports.Imports`: imported preference pairs and unpaired rows
    store.checkpoints   `checkpoints.Checkpoints`: the checkpoint registry and which one serves
    store.judges        `judges.JudgeBattles`: automated judges' battles
    store.prompt_sets   `prompt_sets.PromptSets`: prompt sets, their prompts and pre-generated responses

What spans kinds is on `Store` itself: `undo_last_vote` (a voter's last vote, pairwise or single),
`training_pairs` and `unpaired_rows` (votes and imported rows, as training reads them).

All of the project's SQL lives in this package: each query is written once, with `?` placeholders,
in SQL both databases read. The few places the dialects differ are `database.insert` and
`database.serialize` for queries, and `migrations` for the schema; `playground.data.db` opens the
connections. Close a store with `close()` or use it as a context manager.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from playground.core.chat import voter_name
from playground.core.home import data_dir
from playground.data.rows import PreferenceRow, UnpairedRow
from playground.data.single_votes import SingleVote, unpaired_rows
from playground.data.store.checkpoints import Checkpoints
from playground.data.store.database import Database, serialize
from playground.data.store.imports import Imports
from playground.data.store.judges import JudgeBattles
from playground.data.store.prompt_sets import PromptSets
from playground.data.store.single_votes import SingleVotes, select_single_votes
from playground.data.store.votes import Votes, select_votes
from playground.data.votes import Binarize, Vote, to_trl_rows

DB_NAME = "votes.sqlite"
DB_URL_ENV = "PLAYGROUND_DB_URL"  # a database URL (or path) used when no --db is given
TRL_KEYS = ("prompt", "chosen", "rejected")


def db_location(flag: str | Path | None, folder: Path | None = None) -> str | Path:
    """Where a command's votes are: its `--db` (a path or URL), else $PLAYGROUND_DB_URL, else
    `votes.sqlite` in `folder` (default: the data directory)."""
    if flag is not None and str(flag).strip():
        return flag
    return os.environ.get(DB_URL_ENV, "").strip() or (folder or data_dir()) / DB_NAME


@dataclass(frozen=True)
class Store:
    """One open vote database and its repositories (see the module docstring). Use `open_store`."""

    database: Database
    votes: Votes
    single_votes: SingleVotes
    imports: Imports
    checkpoints: Checkpoints
    judges: JudgeBattles
    prompt_sets: PromptSets

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def undo_last_vote(self, voter: str) -> Vote | SingleVote | None:
        """Delete `voter`'s most recently cast vote, pairwise or single, and return it; None if they
        have none."""
        name = voter_name(voter)
        with self.database.transaction(write=True) as db:
            serialize(db, f"undo {name}")  # two undos at once take two votes, not the same one twice
            last = db.execute(
                "SELECT kind, id FROM (SELECT 'pair' AS kind, id, created_at FROM votes WHERE voter = ? "
                "UNION ALL SELECT 'single', id, created_at FROM single_votes WHERE voter = ?) AS cast_votes "
                "ORDER BY created_at DESC, id DESC LIMIT 1", (name, name)).fetchone()
            if last is None:
                return None
            if last["kind"] == "single":
                (vote,) = select_single_votes(db, "id = ?", [last["id"]])
                db.execute("DELETE FROM single_votes WHERE id = ?", (last["id"],))
                return vote
            (pair,) = select_votes(db, "v.id = ?", [last["id"]])
            db.execute("DELETE FROM votes WHERE id = ?", (last["id"],))  # its responses go by ON DELETE CASCADE
        return pair

    def training_pairs(self, binarize: Binarize = "all_pairs", seed: int = 0,
                       votes: list[Vote] | None = None, include_imported: bool = True) -> list[PreferenceRow]:
        """What DPO trains on: every vote's pairs (see `votes.to_trl_rows`), then the imported pairs.
        `votes` replaces the stored votes (the queue's votes merged per prompt, say)."""
        from_votes = [
            PreferenceRow(r["prompt"], r["chosen"], r["rejected"], {k: v for k, v in r.items() if k not in TRL_KEYS})
            for r in to_trl_rows(self.votes.list() if votes is None else votes, binarize, seed)
        ]
        return from_votes + (self.imports.pairs() if include_imported else [])

    def unpaired_rows(self, votes: list[Vote] | None = None, include_imported: bool = True) -> list[UnpairedRow]:
        """What KTO trains on beyond the pairs: both-bad responses and single votes
        (`single_votes.unpaired_rows`), then the imported unpaired rows. `votes` replaces the stored votes."""
        from_votes = unpaired_rows(self.votes.list() if votes is None else votes, self.single_votes.list())
        return from_votes + (self.imports.unpaired() if include_imported else [])


def open_store(location: str | Path) -> Store:
    """The store at a path, `sqlite:PATH` or `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`, migrated
    to the current schema; `PlaygroundError` when it cannot be opened or is no vote database."""
    database = Database(location)
    return Store(database, Votes(database), SingleVotes(database), Imports(database), Checkpoints(database),
                 JudgeBattles(database), PromptSets(database))
