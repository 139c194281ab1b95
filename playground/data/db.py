"""Connections to the vote database: a SQLite file or a PostgreSQL server, behind one interface.

`open_backend(location)` takes a file path (or `sqlite:PATH`) or a `postgresql://USER@HOST:PORT/DB`
URL. Both backends hand out a `Connection` per transaction that speaks `?` placeholders and returns
rows readable by position or column name, so the store (`playground.data.store`) writes each query
once (it keeps every query and the few dialect differences of the schema). This module only opens
connections, runs transactions and turns each backend's failures into one `PlaygroundError` line
naming the database: its path, or its URL without the password. It also hands out the training lock
(one training run at a time over every process on one database, see `TrainingLock`).

Threads: Gradio's workers share one store. SQLite: one connection and a lock around every
transaction (SQLite writes one transaction at a time anyway; one connection means its pragmas are
set once). PostgreSQL: a psycopg pool of up to `POOL_SIZE` connections, each checked before use, so
a server that restarted is reconnected to instead of failing every later vote.
"""

import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias
from urllib.parse import urlsplit

from playground.core.errors import PlaygroundError

if TYPE_CHECKING:  # psycopg is imported only when a PostgreSQL URL is opened
    import psycopg

Dialect = Literal["sqlite", "postgresql"]
POSTGRES_SCHEMES = ("postgresql", "postgres")
URL_FORMS = "a SQLite file path, sqlite:PATH, or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
BUSY_TIMEOUT_S = 10.0  # SQLite: how long a writer waits for another process's write lock
CONNECT_TIMEOUT_S = 5  # PostgreSQL: a host that does not answer fails after this long
POOL_SIZE = 8  # PostgreSQL connections one process opens at most (Gradio's workers share them)
# PostgreSQL: how long a transaction waits for a pooled connection (all busy, or the server away)
# before the change is refused; like SQLite's busy timeout.
POOL_TIMEOUT_S = 10.0


class IntegrityError(Exception):
    """A constraint refused a row (a unique index, a CHECK), on either backend."""


class PgRow(tuple):
    """A PostgreSQL result row by position or by column name, as sqlite3.Row is."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.names[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.names)


Row: TypeAlias = sqlite3.Row | PgRow


def _pg_rows(cursor: "psycopg.Cursor[Any]") -> Callable[[Sequence[Any]], PgRow]:
    """psycopg's row factory for `PgRow`: the column names are looked up once per result."""
    names = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> PgRow:
        row = PgRow(values)
        row.names = names
        return row

    return make


@lru_cache(maxsize=512)
def _pg_placeholders(sql: str) -> str:
    # psycopg's placeholder is %s, so a literal % is written %%; no query here has a ? in a literal.
    return sql.replace("%", "%%").replace("?", "%s")


class Connection:
    """One transaction's connection: `?` placeholders, rows by position or column name. `dialect`
    tells the store which of its few dialect-specific statements to use."""

    def __init__(self, raw: Any, dialect: Dialect, integrity: type[Exception]) -> None:
        self.raw = raw  # sqlite3.Connection or psycopg.Connection
        self.dialect = dialect
        self._integrity = integrity

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else _pg_placeholders(sql)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor (fetchone, fetchall, iteration, rowcount)."""
        try:
            if self.dialect == "sqlite":
                return self.raw.execute(sql, params)
            return self.raw.execute(self._sql(sql), params or None)
        except self._integrity as exc:
            raise IntegrityError(str(exc)) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        """Run one statement per row; the cursor's rowcount is the rows changed by all of them."""
        try:
            if self.dialect == "sqlite":
                return self.raw.executemany(sql, rows)
            cursor = self.raw.cursor()
            cursor.executemany(self._sql(sql), rows)
            return cursor
        except self._integrity as exc:
            raise IntegrityError(str(exc)) from exc


class Backend(Protocol):
    """An open SQLite file or PostgreSQL pool: transactions, the training lock, close."""

    dialect: Dialect
    location: str  # a path, or the URL without its password: safe to print
    path: Path | None  # the SQLite file; None on a server
    errors: tuple[type[Exception], ...]  # what the backend raises on a database that is no vote store

    def transaction(self, write: bool = False) -> AbstractContextManager[Connection]: ...

    def training_lock(self) -> "TrainingLock": ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Location:
    dialect: Dialect
    path: Path | None
    url: str | None  # with the password: handed to libpq only, never printed
    shown: str  # the path, or the URL without password and query: what messages name


def parse_location(location: str | Path) -> Location:
    """A path or URL as given to `--db` / `PLAYGROUND_DB_URL`; one clear error for a malformed URL."""
    text = str(location).strip()
    scheme = text.split(":", 1)[0].lower()
    if isinstance(location, Path) or not (scheme == "sqlite" or "://" in text):
        return Location("sqlite", Path(location), None, str(location))
    if scheme == "sqlite":
        rest = text[len("sqlite:"):]
        if not rest.strip("/"):
            raise PlaygroundError(f"{text}: names no file; expected {URL_FORMS}")
        path = Path(rest[2:] if rest.startswith("//") else rest)  # sqlite:///abs/path, sqlite:rel/path
        return Location("sqlite", path, None, str(path))
    if scheme not in POSTGRES_SCHEMES:
        raise PlaygroundError(f"{scheme}://…: not a supported vote database; expected {URL_FORMS}")
    parts = urlsplit(text)
    user = f"{parts.username}@" if parts.username else ""
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rsplit(":", 1)[-1]
        raise PlaygroundError(f"{scheme}://{user}{parts.hostname or ''}:{port_text}/…: the port is not a number "
                              f"from 1 to 65535; expected {URL_FORMS}") from None
    host = parts.hostname or "localhost"
    shown = f"{scheme}://{user}{host}{f':{port}' if port else ''}{parts.path}"
    if not parts.path.strip("/"):
        raise PlaygroundError(f"{shown}: names no database; expected {URL_FORMS}")
    return Location("postgresql", None, text, shown)


def open_backend(location: str | Path) -> Backend:
    loc = parse_location(location)
    return SqliteBackend(loc) if loc.dialect == "sqlite" else PostgresBackend(loc)


class SqliteBackend:
    dialect: Dialect = "sqlite"
    errors = (sqlite3.DatabaseError,)

    def __init__(self, loc: Location) -> None:
        assert loc.path is not None
        self.path = loc.path
        self.location = loc.shown
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise PlaygroundError(f"{self.path}: cannot open the vote database ({exc})") from None
        self.connection.row_factory = sqlite3.Row
        try:
            # The first statement reads the file: this is where a file that is no database fails.
            self.connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a vote the UI has acknowledged survives a power cut, not just a crash.
            self.connection.execute("PRAGMA synchronous=FULL")
            self.connection.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            self.connection.close()
            raise PlaygroundError(f"{self.path}: not a usable SQLite vote database ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self.connection.close()

    def training_lock(self) -> "TrainingLock":
        return FileTrainingLock(self.path)

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Connection]:
        """One transaction under the lock. A write takes SQLite's write lock up front (IMMEDIATE): a
        read lock upgraded later fails at once when another process writes, instead of waiting."""
        with self._lock:
            db = self.connection
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield Connection(db, "sqlite", sqlite3.IntegrityError)
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # locked past the timeout, disk full, I/O error
                raise PlaygroundError(f"{self.path}: {exc}") from None


def _one_line(exc: BaseException, secret: str | None) -> str:
    """libpq's message on one line, without the password should a message ever quote the URL."""
    text = " ".join(str(exc).split())
    return text.replace(secret, "***") if secret else text


class PostgresBackend:
    dialect: Dialect = "postgresql"
    path: Path | None = None

    def __init__(self, loc: Location) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        assert loc.url is not None
        self.location = loc.shown
        self.errors = (psycopg.Error,)
        self._url = loc.url
        self._secret = urlsplit(loc.url).password
        self._psycopg = psycopg
        # One direct connection first: a wrong host, a refused connection, a missing database or a
        # bad password fails here at once with libpq's own reason, where a pool would only time out.
        self._check_reachable("cannot open the vote database")
        self._pool = ConnectionPool(
            self._url, min_size=1, max_size=POOL_SIZE, timeout=POOL_TIMEOUT_S, open=False,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "row_factory": _pg_rows},
            # A pooled connection is checked before each use: after a server restart the dead ones
            # are replaced instead of failing the vote that draws them.
            check=ConnectionPool.check_connection, name="playground-votes",
            # The pool retries a lost server with growing pauses; giving up after one wait (the next
            # transaction starts a fresh attempt at once) bounds how long a returned server goes unused.
            reconnect_timeout=POOL_TIMEOUT_S,
        )
        self._pool.open()

    def _connect(self, what: str, **options: Any) -> "psycopg.Connection[Any]":
        """A connection of its own, outside the pool; `what` failed is the error's first words."""
        try:
            return self._psycopg.connect(self._url, connect_timeout=CONNECT_TIMEOUT_S, **options)
        except self._psycopg.Error as exc:
            raise PlaygroundError(f"{self.location}: {what} ({_one_line(exc, self._secret)})") from None

    def _check_reachable(self, what: str) -> None:
        self._connect(what).close()

    def close(self) -> None:
        self._pool.close()

    def training_lock(self) -> "TrainingLock":
        return AdvisoryTrainingLock(self)

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Connection]:
        """One transaction on a pooled connection: committed at the end, rolled back on any error
        (a lost connection included, so a change is stored whole or not at all). PostgreSQL runs
        writers side by side; the store serializes the few check-then-write changes itself."""
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        try:
            with self._pool.connection() as raw:  # commits on exit, rolls back on an exception
                yield Connection(raw, "postgresql", psycopg.IntegrityError)
        except PoolTimeout:
            # No connection in time: say why (the server is away, or every connection was busy).
            self._check_reachable("the vote database is unreachable; nothing was stored")
            raise PlaygroundError(f"{self.location}: no database connection came free within {POOL_TIMEOUT_S:g} s "
                                  "(busy, or the server just came back); nothing was stored, try again") from None
        except psycopg.OperationalError as exc:  # the server went away mid-transaction
            raise PlaygroundError(f"{self.location}: lost the connection to the vote database; nothing of "
                                  f"this change was stored ({_one_line(exc, self._secret)})") from None
        except psycopg.DataError as exc:  # a value PostgreSQL cannot hold, e.g. a NUL character in text
            raise PlaygroundError(f"{self.location}: the vote database refused a value "
                                  f"({_one_line(exc, self._secret)})") from None


# The training lock: one training run at a time over every process on one vote database (app
# replicas, scripts). A holder holds it only while alive: when its process dies, kill -9 included,
# the server (PostgreSQL: the session ends) or the kernel (SQLite: the file closes) lets go.

TRAINING_LOCK_KEYS = (0x706C6179, 1)  # PostgreSQL: the advisory lock's two int4 keys ("play", 1 = training)
LOCK_FILE_SUFFIX = ".training.lock"  # SQLite: the lock file beside the database
HOLDER_PREFIX = "playground-training "  # PostgreSQL: the lock connection's application_name, then pid@host


@dataclass(frozen=True)
class LockHolder:
    """Who holds the training lock: host, process id (0: not known yet), and since when (unix time)."""

    host: str
    pid: int
    since: float

    def describe(self) -> str:
        who = f"replica {self.host}:{self.pid}" if self.pid else "another replica"
        return f"{who} has been training since {time.strftime('%H:%M', time.localtime(self.since))}"

    def refusal(self) -> str:
        """Why a run that found this holder's lock does not start: what the app and the commands say."""
        return f"training refused: {self.describe()}; wait for it to finish"


def _this_process() -> LockHolder:
    return LockHolder(socket.gethostname(), os.getpid(), time.time())


class TrainingLock(Protocol):
    """A database's training lock as one `Backend.training_lock()` object sees it: `acquire` takes
    it for this object (any other object, in this process or another, is then refused), `release`
    lets it go, `locked` says whether this object holds it, `holder` who holds it (None: nobody)."""

    def acquire(self, blocking: bool = False) -> bool: ...

    def release(self) -> None: ...

    def locked(self) -> bool: ...

    def holder(self) -> LockHolder | None: ...


class FileTrainingLock:
    """SQLite: `flock` on `<database>.training.lock`. A flock belongs to an open file, so two objects
    in one process exclude each other as two processes do. The holder writes who it is into the file;
    what the file says counts only while someone holds the lock."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + LOCK_FILE_SUFFIX)
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PlaygroundError(f"{self.path}: cannot open the training lock file ({exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        me = _this_process()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": me.host, "pid": me.pid, "since": me.since}).encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            raise RuntimeError("release of a training lock this object does not hold")
        fd, self._fd = self._fd, None
        os.close(fd)  # the open file's last descriptor: the flock goes with it

    def locked(self) -> bool:
        return self._fd is not None

    def holder(self) -> LockHolder | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:  # a shared lock is granted only while nobody holds the exclusive one
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return None
            except BlockingIOError:
                pass
            try:
                found = json.loads(os.pread(fd, 4096, 0))
                return LockHolder(str(found["host"]), int(found["pid"]), float(found["since"]))
            except (ValueError, KeyError, TypeError):  # taken a moment ago, not written yet
                return LockHolder("", 0, time.time())
        finally:
            os.close(fd)


class AdvisoryTrainingLock:
    """PostgreSQL: a session-level advisory lock on a connection of its own (outside the pool, which
    would hand the session to other work), held open for the run. The server ends the session, and
    the lock, when the connection dies. Who holds it: the lock's session in pg_stat_activity."""

    def __init__(self, database: "PostgresBackend") -> None:
        self._database = database
        self._connection: psycopg.Connection[Any] | None = None

    def acquire(self, blocking: bool = False) -> bool:
        if self._connection is not None:
            return False
        me = _this_process()
        connection = self._database._connect("cannot take the training lock", autocommit=True,
                                             application_name=f"{HOLDER_PREFIX}{me.pid}@{me.host}")
        try:
            if blocking:
                connection.execute("SELECT pg_advisory_lock(%s, %s)", TRAINING_LOCK_KEYS)
            elif not connection.execute("SELECT pg_try_advisory_lock(%s, %s)", TRAINING_LOCK_KEYS).fetchone()[0]:
                connection.close()
                return False
        except self._database._psycopg.Error as exc:
            connection.close()
            raise PlaygroundError(f"{self._database.location}: cannot take the training lock "
                                  f"({_one_line(exc, self._database._secret)})") from None
        self._connection = connection
        return True

    def release(self) -> None:
        if self._connection is None:
            raise RuntimeError("release of a training lock this object does not hold")
        connection, self._connection = self._connection, None
        connection.close()  # the session ends, its advisory lock with it (already, if the server went away)

    def locked(self) -> bool:
        return self._connection is not None

    def holder(self) -> LockHolder | None:
        with self._database.transaction() as db:
            row = db.execute(
                "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::bigint = ? "
                "AND l.objid::bigint = ? "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                TRAINING_LOCK_KEYS).fetchone()
        if row is None:
            return None
        pid, _, host = (row["application_name"] or "").removeprefix(HOLDER_PREFIX).partition("@")
        since = row["backend_start"].timestamp() if row["backend_start"] else time.time()
        return LockHolder(host, int(pid) if pid.isdigit() else 0, since)
