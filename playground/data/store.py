"""The vote database: SQLite behind one small class.

All of the project's SQL lives in this module, so another database could replace it by writing
another `Store` with the same methods.

Threads: Gradio runs handlers in a thread pool, so one `Store` is shared between threads. It holds
one connection (`check_same_thread=False`) and a lock around every transaction: SQLite writes one
transaction at a time anyway, each call is short, and one connection means the per-connection
pragmas are set once. Other processes (`python -m playground.data` while the app runs) use their own
connections; WAL lets them read while the app writes, and the busy timeout makes writers wait.
"""

import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playground.core.errors import PlaygroundError
from playground.core.home import data_dir
from playground.data.prompt_sets import PromptSet, SetPrompt, SetResponse
from playground.data.rows import PreferenceRow, UnpairedRow
from playground.data.single_votes import SingleVote, unpaired_rows
from playground.data.votes import Binarize, Response, Vote, to_trl_rows, voter_name

DB_NAME = "votes.sqlite"
TRL_KEYS = ("prompt", "chosen", "rejected")
BUSY_TIMEOUT_S = 10.0


def default_path() -> Path:
    return data_dir() / DB_NAME


# Migrations, oldest first: migration n takes a database at schema version n - 1 to version n, and
# runs inside the transaction that records n. Never edit one that has shipped; add the next. (So
# the values below are written out, not taken from votes.OUTCOMES, which may grow.)
def _initial_schema(db: sqlite3.Connection) -> None:
    for statement in (
        """CREATE TABLE votes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an undone vote's id is never reused
            prompt TEXT NOT NULL,                  -- JSON list of chat messages
            outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad', 'ranking')),
            voter TEXT NOT NULL,
            settings TEXT NOT NULL,                -- JSON object
            anonymous INTEGER NOT NULL CHECK (anonymous IN (0, 1)),
            created_at REAL NOT NULL               -- unix time
        )""",
        "CREATE INDEX votes_by_voter ON votes (voter, id)",
        "CREATE INDEX votes_by_time ON votes (created_at)",
        """CREATE TABLE responses (
            vote_id INTEGER NOT NULL REFERENCES votes (id) ON DELETE CASCADE,
            slot INTEGER NOT NULL CHECK (slot >= 0),  -- position shown: 0 is "a"
            model TEXT NOT NULL,
            text TEXT NOT NULL,
            scores TEXT NOT NULL,                     -- JSON object of name -> number
            rank INTEGER,                             -- 0 = best; set only for a ranking vote
            PRIMARY KEY (vote_id, slot)
        ) WITHOUT ROWID""",
        "CREATE INDEX responses_by_model ON responses (model)",
        """CREATE TABLE import_batches (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,                  -- the imported file's name
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE imported_pairs (
            id INTEGER PRIMARY KEY,
            batch_id INTEGER NOT NULL REFERENCES import_batches (id) ON DELETE CASCADE,
            prompt TEXT NOT NULL,                  -- JSON: a string or a message list, as imported
            chosen TEXT NOT NULL,
            rejected TEXT NOT NULL,
            extra TEXT NOT NULL                    -- JSON object: the row's other fields
        )""",
        "CREATE INDEX imported_pairs_by_batch ON imported_pairs (batch_id)",
    ):
        db.execute(statement)


def _checkpoint_registry(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE checkpoints (
        id TEXT PRIMARY KEY,                   -- the checkpoint folder's name
        path TEXT NOT NULL,                    -- the folder: adapter + record.json
        parent TEXT,                           -- the checkpoint it was trained from, if any
        created_at REAL NOT NULL,
        record TEXT NOT NULL                   -- JSON: record.json as written
    )""")


def _judges_and_prompt_sets(db: sqlite3.Connection) -> None:
    for statement in (
        # Automated battles, kept apart from human votes so a leaderboard can include or leave them out.
        """CREATE TABLE judge_battles (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            judge TEXT NOT NULL,                   -- e.g. "rule:shorter", "reward-model:rm-0001"
            run TEXT NOT NULL,                     -- one judge run's id: battles judged together
            prompt TEXT NOT NULL,                  -- JSON list of chat messages
            model_a TEXT NOT NULL,
            model_b TEXT NOT NULL,
            text_a TEXT NOT NULL,
            text_b TEXT NOT NULL,
            winner TEXT NOT NULL CHECK (winner IN ('model_a', 'model_b', 'tie', 'tie (bothbad)')),
            details TEXT NOT NULL,                 -- JSON object: the judge's numbers (rewards, lengths)
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX judge_battles_by_judge ON judge_battles (judge, id)",
        """CREATE TABLE prompt_sets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL,                  -- the imported file's name
            overlap INTEGER NOT NULL DEFAULT 1 CHECK (overlap >= 1),  -- votes a prompt needs to leave the queue
            guidelines TEXT NOT NULL DEFAULT '',   -- Markdown shown above the voting queue
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE set_prompts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            set_id INTEGER NOT NULL REFERENCES prompt_sets (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,             -- order in the imported file
            ref TEXT NOT NULL,                     -- the file's `id`, else the row number
            prompt TEXT NOT NULL,                  -- JSON list of chat messages
            category TEXT,
            UNIQUE (set_id, ref)
        )""",
        # Pre-generated responses: one per (prompt, model), so a resumed job skips what exists.
        """CREATE TABLE set_responses (
            prompt_id INTEGER NOT NULL REFERENCES set_prompts (id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            text TEXT NOT NULL,
            scores TEXT NOT NULL,                  -- JSON object of name -> number
            settings TEXT NOT NULL,                -- JSON: generation settings, seed included
            created_at REAL NOT NULL,
            PRIMARY KEY (prompt_id, model)
        ) WITHOUT ROWID""",
        # A vote cast in the voting queue names its prompt-set prompt; playground votes leave it NULL.
        "ALTER TABLE votes ADD COLUMN item INTEGER REFERENCES set_prompts (id) ON DELETE SET NULL",
        "CREATE INDEX votes_by_item ON votes (item, voter)",
    ):
        db.execute(statement)


def _queue_models(db: sqlite3.Connection) -> None:
    # What a set's voting queue shows: every voter must see the same k models on a prompt, or
    # their votes on it could not be compared (agreement) or merged (export).
    for statement in (
        "ALTER TABLE prompt_sets ADD COLUMN models TEXT NOT NULL DEFAULT '[]'",  # JSON list of model names
        "ALTER TABLE prompt_sets ADD COLUMN generation TEXT NOT NULL DEFAULT '{}'",  # JSON: generation settings
    ):
        db.execute(statement)


def _rated_as(db: sqlite3.Connection) -> None:
    # Each response's name on the leaderboard, fixed when it was generated (the checkpoint serving
    # as "policy", "sft" for the SFT weights under another name); NULL: rated as `model`.
    for statement in (
        "ALTER TABLE responses ADD COLUMN rated_as TEXT",
        "ALTER TABLE set_responses ADD COLUMN rated_as TEXT",
        # Votes kept these names as a JSON list in settings.rated_as (one per slot): moved to their
        # responses where the list is well formed (one non-empty name per response), dropped there.
        """CREATE TEMP TABLE moved AS SELECT v.id FROM votes v
           WHERE json_valid(v.settings) AND json_type(v.settings, '$.rated_as') = 'array'
             AND json_array_length(v.settings, '$.rated_as') = (SELECT COUNT(*) FROM responses r WHERE r.vote_id = v.id)
             AND NOT EXISTS (SELECT 1 FROM json_each(v.settings, '$.rated_as') e
                             WHERE e.type != 'text' OR trim(e.value) = '')""",
        """UPDATE responses SET rated_as = (SELECT json_extract(v.settings, '$.rated_as[' || responses.slot || ']')
                                          FROM votes v WHERE v.id = responses.vote_id)
           WHERE vote_id IN (SELECT id FROM moved)""",
        "UPDATE votes SET settings = json_remove(settings, '$.rated_as') WHERE id IN (SELECT id FROM moved)",
        "DROP TABLE moved",
    ):
        db.execute(statement)


def _single_votes(db: sqlite3.Connection) -> None:
    for statement in (
        # One response judged on its own (👍 label 1, 👎 label 0): no battle, so kept out of `votes`,
        # whose readers (ratings, win rates, pairs, merging) all compare two or more responses.
        """CREATE TABLE single_votes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            prompt TEXT NOT NULL,                  -- JSON list of chat messages
            model TEXT NOT NULL,
            rated_as TEXT,
            text TEXT NOT NULL,
            scores TEXT NOT NULL,                  -- JSON object of name -> number
            slot INTEGER NOT NULL CHECK (slot >= 0),
            label INTEGER NOT NULL CHECK (label IN (0, 1)),
            voter TEXT NOT NULL,
            settings TEXT NOT NULL,                -- JSON object
            anonymous INTEGER NOT NULL CHECK (anonymous IN (0, 1)),
            created_at REAL NOT NULL,
            item INTEGER REFERENCES set_prompts (id) ON DELETE SET NULL
        )""",
        "CREATE INDEX single_votes_by_voter ON single_votes (voter, id)",
        # In the queue a voter judges each model's response on a prompt once.
        "CREATE UNIQUE INDEX single_votes_once ON single_votes (item, voter, model) WHERE item IS NOT NULL",
        """CREATE TABLE imported_unpaired (
            id INTEGER PRIMARY KEY,
            batch_id INTEGER NOT NULL REFERENCES import_batches (id) ON DELETE CASCADE,
            prompt TEXT NOT NULL,                  -- JSON: a string or a message list, as imported
            completion TEXT NOT NULL,              -- JSON: a string or a message list, as imported
            label INTEGER NOT NULL CHECK (label IN (0, 1)),
            extra TEXT NOT NULL                    -- JSON object: the row's other fields
        )""",
        "CREATE INDEX imported_unpaired_by_batch ON imported_unpaired (batch_id)",
    ):
        db.execute(statement)


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _initial_schema, _checkpoint_registry, _judges_and_prompt_sets, _queue_models, _rated_as, _single_votes,
)

_VOTE_COLUMNS = """v.id, v.prompt, v.outcome, v.voter, v.settings, v.anonymous, v.created_at, v.item,
    r.slot, r.model, r.text, r.scores, r.rank, r.rated_as"""


def _votes_from(rows: list[sqlite3.Row]) -> list[Vote]:
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


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise PlaygroundError(f"{self.path}: cannot open the vote database ({exc})") from None
        self._db.row_factory = sqlite3.Row
        try:
            # The first statement reads the file: this is where a file that is no database fails.
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a vote the UI has acknowledged survives a power cut, not just a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise PlaygroundError(f"{self.path}: not a usable SQLite vote database ({exc})") from None
        except PlaygroundError:
            self._db.close()
            raise

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock. A write takes SQLite's write lock up front (IMMEDIATE): a
        read lock upgraded later fails at once when another process writes, instead of waiting."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # locked past the timeout, disk full, I/O error
                raise PlaygroundError(f"{self.path}: {exc}") from None

    def _migrate(self) -> None:
        # In one write transaction, so two processes opening a new database do not both migrate it.
        with self._transaction(write=True) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise PlaygroundError(
                    f"{self.path}: the vote database has schema version {version}, newer than this "
                    f"playground knows ({len(MIGRATIONS)}); update the playground to open it"
                )
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(db)
                db.execute(f"PRAGMA user_version = {number}")

    def add_vote(self, vote: Vote) -> int:
        """Store a vote (its `id`, if any, is ignored) and return its new id."""
        with self._transaction(write=True) as db:
            return self._insert_vote(db, vote)

    def _insert_vote(self, db: sqlite3.Connection, vote: Vote) -> int:
        place = {slot: p for p, slot in enumerate(vote.ranking or ())}
        vote_id = db.execute(
            "INSERT INTO votes (prompt, outcome, voter, settings, anonymous, created_at, item) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (json.dumps(vote.prompt), vote.outcome, vote.voter, json.dumps(vote.settings),
             int(vote.anonymous), vote.created_at, vote.item),
        ).lastrowid
        db.executemany(
            "INSERT INTO responses (vote_id, slot, model, text, scores, rank, rated_as) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(vote_id, slot, r.model, r.text, json.dumps(r.scores), place.get(slot), r.rated_as)
             for slot, r in enumerate(vote.responses)],
        )
        assert vote_id is not None
        return vote_id

    def _select(self, db: sqlite3.Connection, where: str, params: list[Any]) -> list[Vote]:
        rows = db.execute(
            f"SELECT {_VOTE_COLUMNS} FROM votes v JOIN responses r ON r.vote_id = v.id "
            f"WHERE {where} ORDER BY v.id, r.slot",
            params,
        ).fetchall()
        return _votes_from(rows)

    def get_vote(self, vote_id: int) -> Vote | None:
        """The vote with this id, or None if there is none (never was, or undone)."""
        with self._transaction() as db:
            found = self._select(db, "v.id = ?", [vote_id])
        return found[0] if found else None

    def votes(self, voter: str | None = None, model: str | None = None, since: float | None = None) -> list[Vote]:
        """Votes in the order cast, optionally only one voter's, those showing `model`, or those
        cast at or after unix time `since`."""
        where, params = ["1"], []
        if voter is not None:
            where.append("v.voter = ?")
            params.append(voter_name(voter))
        if model is not None:
            where.append("v.id IN (SELECT vote_id FROM responses WHERE model = ?)")
            params.append(model)
        if since is not None:
            where.append("v.created_at >= ?")
            params.append(since)
        with self._transaction() as db:
            return self._select(db, " AND ".join(where), params)

    def undo_last_vote(self, voter: str) -> Vote | SingleVote | None:
        """Delete `voter`'s most recently cast vote, pairwise or single, and return it; None if they
        have none."""
        name = voter_name(voter)
        with self._transaction(write=True) as db:
            last = db.execute(
                "SELECT kind, id FROM (SELECT 'pair' AS kind, id, created_at FROM votes WHERE voter = ? "
                "UNION ALL SELECT 'single', id, created_at FROM single_votes WHERE voter = ?) "
                "ORDER BY created_at DESC, id DESC LIMIT 1", (name, name)).fetchone()
            if last is None:
                return None
            if last["kind"] == "single":
                (vote,) = self._select_single(db, "id = ?", [last["id"]])
                db.execute("DELETE FROM single_votes WHERE id = ?", (last["id"],))
                return vote
            (pair,) = self._select(db, "v.id = ?", [last["id"]])
            db.execute("DELETE FROM votes WHERE id = ?", (last["id"],))  # its responses go by ON DELETE CASCADE
        return pair

    def add_single_vote(self, vote: SingleVote) -> int:
        """Store a 👍/👎 (its `id`, if any, is ignored) and return its new id. In the queue (`item`
        set), a voter's second single vote on the same model's response to a prompt is refused."""
        r = vote.response
        with self._transaction(write=True) as db:
            try:
                vote_id = db.execute(
                    "INSERT INTO single_votes (prompt, model, rated_as, text, scores, slot, label, voter, settings, "
                    "anonymous, created_at, item) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (json.dumps(vote.prompt), r.model, r.rated_as, r.text, json.dumps(r.scores), vote.slot,
                     int(vote.label), vote.voter, json.dumps(vote.settings), int(vote.anonymous), vote.created_at,
                     vote.item),
                ).lastrowid
            except sqlite3.IntegrityError:
                raise PlaygroundError(f"{vote.voter} has already given this response a 👍/👎") from None
        assert vote_id is not None
        return vote_id

    @staticmethod
    def _select_single(db: sqlite3.Connection, where: str, params: list[Any]) -> list[SingleVote]:
        rows = db.execute(f"SELECT * FROM single_votes WHERE {where} ORDER BY id", params).fetchall()
        return [SingleVote(id=r["id"], prompt=json.loads(r["prompt"]), slot=r["slot"], label=bool(r["label"]),
                           response=Response(r["model"], r["text"], json.loads(r["scores"]), r["rated_as"]),
                           voter=r["voter"], settings=json.loads(r["settings"]), anonymous=bool(r["anonymous"]),
                           created_at=r["created_at"], item=r["item"]) for r in rows]

    def single_votes(self, voter: str | None = None) -> list[SingleVote]:
        """Single votes (👍/👎) in the order cast, optionally only one voter's."""
        where, params = ("voter = ?", [voter_name(voter)]) if voter is not None else ("1", [])
        with self._transaction() as db:
            return self._select_single(db, where, params)

    def import_unpaired(self, rows: list[UnpairedRow], source: str) -> int:
        """Add unpaired rows (prompt, completion, label) read from the file named `source`, in one transaction."""
        if not rows:
            return 0
        with self._transaction(write=True) as db:
            batch = db.execute(
                "INSERT INTO import_batches (source, created_at) VALUES (?, ?)", (source, time.time())
            ).lastrowid
            db.executemany(
                "INSERT INTO imported_unpaired (batch_id, prompt, completion, label, extra) VALUES (?, ?, ?, ?, ?)",
                [(batch, json.dumps(r.prompt), json.dumps(r.completion), int(r.label),
                  json.dumps(r.extra, default=str)) for r in rows],
            )
        return len(rows)

    def imported_unpaired(self) -> list[UnpairedRow]:
        with self._transaction() as db:
            rows = db.execute("SELECT prompt, completion, label, extra FROM imported_unpaired ORDER BY id").fetchall()
        return [UnpairedRow(json.loads(r["prompt"]), json.loads(r["completion"]), bool(r["label"]),
                            json.loads(r["extra"])) for r in rows]

    def unpaired_rows(self, votes: list[Vote] | None = None, include_imported: bool = True) -> list[UnpairedRow]:
        """What KTO trains on beyond the pairs: both-bad responses and single votes
        (`single_votes.unpaired_rows`), then the imported unpaired rows. `votes` replaces the stored votes."""
        from_votes = unpaired_rows(self.votes() if votes is None else votes, self.single_votes())
        return from_votes + (self.imported_unpaired() if include_imported else [])

    def counts_by_voter(self) -> dict[str, int]:
        """Pairwise votes per voter."""
        with self._transaction() as db:
            return dict(db.execute("SELECT voter, COUNT(*) FROM votes GROUP BY voter ORDER BY voter").fetchall())

    def single_counts_by_voter(self) -> dict[str, tuple[int, int]]:
        """(👍, 👎) single votes per voter."""
        with self._transaction() as db:
            rows = db.execute("SELECT voter, SUM(label), SUM(1 - label) FROM single_votes GROUP BY voter "
                              "ORDER BY voter").fetchall()
        return {voter: (up, down) for voter, up, down in rows}

    def counts_by_model(self) -> dict[str, int]:
        """How many responses from each model have been voted on."""
        with self._transaction() as db:
            return dict(db.execute("SELECT model, COUNT(*) FROM responses GROUP BY model ORDER BY model").fetchall())

    def import_pairs(self, rows: list[PreferenceRow], source: str) -> int:
        """Add preference rows read from the file named `source`, all in one transaction."""
        if not rows:
            return 0
        with self._transaction(write=True) as db:
            batch = db.execute(
                "INSERT INTO import_batches (source, created_at) VALUES (?, ?)", (source, time.time())
            ).lastrowid
            db.executemany(
                "INSERT INTO imported_pairs (batch_id, prompt, chosen, rejected, extra) VALUES (?, ?, ?, ?, ?)",
                # default=str: Parquet extras can hold dates or bytes; kept as text rather than refused.
                [(batch, json.dumps(r.prompt), json.dumps(r.chosen), json.dumps(r.rejected),
                  json.dumps(r.extra, default=str)) for r in rows],
            )
        return len(rows)

    def imported_pairs(self) -> list[PreferenceRow]:
        with self._transaction() as db:
            rows = db.execute("SELECT prompt, chosen, rejected, extra FROM imported_pairs ORDER BY id").fetchall()
        return [PreferenceRow(*(json.loads(value) for value in row)) for row in rows]

    def training_pairs(self, binarize: Binarize = "all_pairs", seed: int = 0,
                       votes: list[Vote] | None = None, include_imported: bool = True) -> list[PreferenceRow]:
        """What DPO trains on: every vote's pairs (see `votes.to_trl_rows`), then the imported pairs.
        `votes` replaces the stored votes (the queue's votes merged per prompt, say)."""
        from_votes = [
            PreferenceRow(r["prompt"], r["chosen"], r["rejected"], {k: v for k, v in r.items() if k not in TRL_KEYS})
            for r in to_trl_rows(self.votes() if votes is None else votes, binarize, seed)
        ]
        return from_votes + (self.imported_pairs() if include_imported else [])

    def register_checkpoint(self, checkpoint_id: str, path: Path, parent: str | None, record: dict[str, Any]) -> None:
        """Record a finished checkpoint (written before, atomically, by `checkpoints.write_checkpoint`)."""
        with self._transaction(write=True) as db:
            db.execute("INSERT OR REPLACE INTO checkpoints (id, path, parent, created_at, record) "
                       "VALUES (?, ?, ?, ?, ?)", (checkpoint_id, str(path), parent, time.time(), json.dumps(record)))

    def checkpoints(self) -> list[dict[str, Any]]:
        """Registered checkpoints, oldest first: id, path, parent, created_at, record."""
        with self._transaction() as db:
            rows = db.execute("SELECT id, path, parent, created_at, record FROM checkpoints ORDER BY created_at, id")
            return [{**dict(r), "record": json.loads(r["record"])} for r in rows.fetchall()]

    def add_judge_battles(self, judge: str, run: str, battles: list[dict[str, Any]]) -> int:
        """Store one judge run's battles, all or nothing. Each battle: prompt (messages), model_a,
        model_b, text_a, text_b, winner (an Arena winner value) and details (a JSON object)."""
        with self._transaction(write=True) as db:
            db.executemany(
                "INSERT INTO judge_battles (judge, run, prompt, model_a, model_b, text_a, text_b, winner, details, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(judge, run, json.dumps(b["prompt"]), b["model_a"], b["model_b"], b["text_a"], b["text_b"],
                  b["winner"], json.dumps(b.get("details", {})), time.time()) for b in battles],
            )
        return len(battles)

    def judge_battles(self, judge: str | None = None) -> list[dict[str, Any]]:
        """Judge battles in the order stored (one judge's, or all), as dicts of the stored columns."""
        where, params = ("WHERE judge = ?", [judge]) if judge is not None else ("", [])
        with self._transaction() as db:
            rows = db.execute(f"SELECT * FROM judge_battles {where} ORDER BY id", params).fetchall()
        return [{**dict(r), "prompt": json.loads(r["prompt"]), "details": json.loads(r["details"])} for r in rows]

    def counts_by_judge(self) -> dict[str, int]:
        with self._transaction() as db:
            return dict(db.execute("SELECT judge, COUNT(*) FROM judge_battles GROUP BY judge ORDER BY judge"))

    # Prompt sets and the voting queue

    def add_prompt_set(self, name: str, source: str, prompts: Sequence[SetPrompt], overlap: int = 1) -> PromptSet:
        """Store a new prompt set and its prompts (positions in the order given), all or nothing."""
        with self._transaction(write=True) as db:
            if db.execute("SELECT 1 FROM prompt_sets WHERE name = ?", (name,)).fetchone():
                raise PlaygroundError(f"a prompt set named {name!r} exists already; choose another name")
            set_id = db.execute(
                "INSERT INTO prompt_sets (name, source, overlap, created_at) VALUES (?, ?, ?, ?)",
                (name, source, overlap, time.time()),
            ).lastrowid
            db.executemany(
                "INSERT INTO set_prompts (set_id, position, ref, prompt, category) VALUES (?, ?, ?, ?, ?)",
                [(set_id, i, p.ref, json.dumps(p.messages), p.category) for i, p in enumerate(prompts)],
            )
            return self._prompt_sets(db, "id = ?", [set_id])[0]

    @staticmethod
    def _prompt_sets(db: sqlite3.Connection, where: str, params: list[Any]) -> list[PromptSet]:
        rows = db.execute(
            "SELECT id, name, source, overlap, guidelines, models, generation, created_at FROM prompt_sets "
            f"WHERE {where} ORDER BY created_at, id", params,
        ).fetchall()
        return [PromptSet(r["id"], r["name"], r["source"], r["overlap"], r["guidelines"],
                          tuple(json.loads(r["models"])), json.loads(r["generation"]), r["created_at"]) for r in rows]

    def prompt_sets(self) -> list[PromptSet]:
        """Every prompt set, oldest first."""
        with self._transaction() as db:
            return self._prompt_sets(db, "1", [])

    def prompt_set(self, name: str) -> PromptSet:
        """The set called `name`; `PlaygroundError` naming the sets there are if there is none."""
        with self._transaction() as db:
            found = self._prompt_sets(db, "name = ?", [name])
            if found:
                return found[0]
            names = [r[0] for r in db.execute("SELECT name FROM prompt_sets ORDER BY name")]
        raise PlaygroundError(f"no prompt set named {name!r}; there are: {', '.join(names) or 'none yet'}")

    def _update_set(self, set_id: int, column: str, value: Any) -> None:
        with self._transaction(write=True) as db:
            if db.execute(f"UPDATE prompt_sets SET {column} = ? WHERE id = ?", (value, set_id)).rowcount != 1:
                raise PlaygroundError(f"prompt set #{set_id} no longer exists")

    def set_overlap(self, set_id: int, overlap: int) -> None:
        self._update_set(set_id, "overlap", overlap)

    def set_guidelines(self, set_id: int, guidelines: str) -> None:
        self._update_set(set_id, "guidelines", guidelines)

    def set_queue_models(self, set_id: int, models: Sequence[str], generation: dict[str, Any]) -> None:
        """The models the set's queue compares and how their responses are generated, in one write."""
        with self._transaction(write=True) as db:
            db.execute("UPDATE prompt_sets SET models = ?, generation = ? WHERE id = ?",
                       (json.dumps(list(models)), json.dumps(generation), set_id))

    @staticmethod
    def _set_prompt(row: sqlite3.Row) -> SetPrompt:
        return SetPrompt(row["ref"], json.loads(row["prompt"]), row["category"], row["id"], row["position"])

    def set_prompts(self, set_id: int) -> list[SetPrompt]:
        """The set's prompts in file order."""
        with self._transaction() as db:
            rows = db.execute("SELECT id, position, ref, prompt, category FROM set_prompts WHERE set_id = ? "
                              "ORDER BY position", (set_id,)).fetchall()
        return [self._set_prompt(r) for r in rows]

    def add_set_responses(self, responses: Sequence[SetResponse]) -> int:
        """Store pre-generated responses in one transaction; a (prompt, model) that already has one
        keeps it (INSERT OR IGNORE), so a resumed or concurrent job never replaces what voters saw.
        Returns how many were new."""
        with self._transaction(write=True) as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO set_responses (prompt_id, model, text, scores, settings, created_at, rated_as) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.prompt_id, r.model, r.text, json.dumps(r.scores), json.dumps(r.settings), time.time(), r.rated_as)
                 for r in responses],
            )
            return db.total_changes - before

    def set_responses(self, prompt_id: int) -> dict[str, SetResponse]:
        """One prompt's stored responses by model."""
        with self._transaction() as db:
            rows = db.execute("SELECT model, text, scores, settings, rated_as FROM set_responses WHERE prompt_id = ?",
                              (prompt_id,)).fetchall()
        return {r["model"]: SetResponse(prompt_id, r["model"], r["text"], json.loads(r["scores"]),
                                        json.loads(r["settings"]), r["rated_as"]) for r in rows}

    def response_models(self, set_id: int) -> dict[int, set[str]]:
        """For each prompt of the set with stored responses, the models they are from."""
        with self._transaction() as db:
            rows = db.execute("SELECT r.prompt_id, r.model FROM set_responses r JOIN set_prompts p "
                              "ON p.id = r.prompt_id WHERE p.set_id = ?", (set_id,)).fetchall()
        models: dict[int, set[str]] = {}
        for prompt_id, model in rows:
            models.setdefault(prompt_id, set()).add(model)
        return models

    def item_voters(self, set_id: int) -> dict[int, list[str]]:
        """For each prompt of the set with votes, its voters in the order they voted (a name
        appears once per vote)."""
        with self._transaction() as db:
            rows = db.execute("SELECT v.item, v.voter FROM votes v JOIN set_prompts p ON p.id = v.item "
                              "WHERE p.set_id = ? ORDER BY v.id", (set_id,)).fetchall()
        voters: dict[int, list[str]] = {}
        for item, voter in rows:
            voters.setdefault(item, []).append(voter)
        return voters

    def set_votes(self, set_id: int) -> list[Vote]:
        """The queue votes on the set's prompts, in the order cast."""
        with self._transaction() as db:
            return self._select(db, "v.item IN (SELECT id FROM set_prompts WHERE set_id = ?)", [set_id])

    def add_queue_vote(self, vote: Vote) -> int:
        """Store a vote from the voting queue, refused when its voter already voted on that prompt.

        The check and the insert share one write transaction, so a double click or a second tab
        cannot slip a second vote in. The overlap is not checked here: a vote cast on a prompt
        that others completed meanwhile is still a person's judgement, and is kept.
        """
        if vote.item is None:
            raise PlaygroundError("a queue vote must name its prompt (item)")
        with self._transaction(write=True) as db:
            if db.execute("SELECT 1 FROM votes WHERE item = ? AND voter = ?", (vote.item, vote.voter)).fetchone():
                raise PlaygroundError(f"{vote.voter} has already voted on this prompt; take the next one")
            return self._insert_vote(db, vote)

    def prompt_categories(self) -> dict[int, tuple[Any, str]]:
        """Every set prompt that has a category, {prompt id: (its messages, category)}: what votes
        (by `Vote.item`) and judge battles (by their prompt) are grouped by on the Dashboard."""
        with self._transaction() as db:
            rows = db.execute("SELECT id, prompt, category FROM set_prompts WHERE category IS NOT NULL").fetchall()
        return {r["id"]: (json.loads(r["prompt"]), r["category"]) for r in rows}
