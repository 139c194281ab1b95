"""The vote store on a real PostgreSQL server: URLs, bad input and faults (a refused connection, a
missing database, a server that goes away mid-vote), the password kept out of every message, and
two stores (two app replicas) on one database. The store's behaviour on both backends: test_store.py."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from playground.core.errors import PlaygroundError
from playground.data import db as db_module
from playground.data.db import parse_location
from playground.data.pg_cluster import LocalCluster, free_port
from playground.data.prompt_sets import SetPrompt
from playground.data.store import DB_URL_ENV, Store, db_location, migrations, open_store
from tests.conftest import make_vote

PASSWORD = "hunter2-Secret"  # the test server trusts local connections: a password is accepted and ignored


def with_password(url: str) -> str:
    return url.replace("playground@", f"playground:{PASSWORD}@")


def refused(call: Any) -> str:
    """The PlaygroundError message of `call()`, checked to be one line without the password."""
    with pytest.raises(PlaygroundError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and PASSWORD not in message
    return message


def test_urls_and_paths_name_their_backend_and_show_no_password(tmp_path: Path) -> None:
    assert parse_location(tmp_path / "v.sqlite").path == tmp_path / "v.sqlite"
    assert parse_location("votes.sqlite").path == Path("votes.sqlite")
    assert parse_location(f"sqlite://{tmp_path}/v.sqlite").path == tmp_path / "v.sqlite"  # sqlite:///abs
    assert parse_location("sqlite:rel/v.sqlite").path == Path("rel/v.sqlite")
    loc = parse_location(f"postgresql://ana:{PASSWORD}@db.lab:6543/votes?sslmode=require")
    assert (loc.dialect, loc.path, loc.shown) == ("postgresql", None, "postgresql://ana@db.lab:6543/votes")
    assert loc.url is not None and PASSWORD in loc.url  # handed to libpq as given
    assert parse_location("postgres://ana@db.lab/votes").shown == "postgres://ana@db.lab/votes"


@pytest.mark.parametrize(("url", "says"), [
    (f"mysql://ana:{PASSWORD}@db.lab/votes", "mysql://…: not a supported vote database"),
    (f"postgresql://ana:{PASSWORD}@db.lab:54x2/votes", "postgresql://ana@db.lab:54x2/…: the port is not a number"),
    (f"postgresql://ana:{PASSWORD}@db.lab:5432/", "postgresql://ana@db.lab:5432/: names no database"),
    ("sqlite:", "sqlite:: names no file"),
])
def test_a_malformed_url_is_one_clear_error(url: str, says: str) -> None:
    message = refused(lambda: open_store(url))
    assert message.startswith(says) and "postgresql://USER" in message  # the forms it takes


def test_a_refused_connection_names_host_and_port() -> None:
    port = free_port()  # nothing listens there
    message = refused(lambda: open_store(f"postgresql://playground:{PASSWORD}@127.0.0.1:{port}/votes"))
    assert message.startswith(f"postgresql://playground@127.0.0.1:{port}/votes: cannot open the vote database (")
    assert "Connection refused" in message


def test_a_missing_database_is_named(postgres_cluster: LocalCluster) -> None:
    url = with_password(postgres_cluster.url("no_such_db"))
    message = refused(lambda: open_store(url))
    assert message.startswith(f"postgresql://playground@127.0.0.1:{postgres_cluster.port}/no_such_db: cannot open")
    assert 'database "no_such_db" does not exist' in message


def count(store: Store, table: str) -> int:
    with store.database.transaction() as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_server_that_goes_away_refuses_the_vote_and_the_store_continues_when_it_returns(
        postgres_cluster: LocalCluster, pg_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every library's log lines, psycopg's pool included
    monkeypatch.setattr(db_module, "POOL_TIMEOUT_S", 2.0)  # how long a vote waits for the server
    with open_store(with_password(pg_url)) as store:
        assert PASSWORD not in store.database.location
        first = store.votes.add(make_vote(voter="ana"))
        postgres_cluster.stop()
        try:
            message = refused(lambda: store.votes.add(make_vote(voter="bo")))
        finally:
            postgres_cluster.start()
        assert message.startswith(f"postgresql://playground@127.0.0.1:{postgres_cluster.port}/")
        assert "unreachable; nothing was stored" in message and "Connection refused" in message
        second = store.votes.add(make_vote(voter="cy"))  # the pool reconnects by itself
        assert [(v.id, v.voter) for v in store.votes.list()] == [(first, "ana"), (second, "cy")]
        assert count(store, "responses") == 4
    assert caplog.records and PASSWORD not in caplog.text


def test_a_connection_lost_mid_vote_stores_nothing_of_it(postgres_cluster: LocalCluster, pg_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The vote row is written, then the server ends the session before its responses: the whole
    vote is refused and rolled back, and the next vote goes through on a fresh connection."""
    real = db_module.Connection.executemany

    def killed_first(self: db_module.Connection, sql: str, rows: Any) -> Any:
        if sql.startswith("INSERT INTO responses"):
            pid = self.execute("SELECT pg_backend_pid()").fetchone()[0]
            postgres_cluster.admin(f"SELECT pg_terminate_backend({pid})")
            monkeypatch.setattr(db_module.Connection, "executemany", real)
        return real(self, sql, rows)

    with open_store(with_password(pg_url)) as store:
        monkeypatch.setattr(db_module.Connection, "executemany", killed_first)
        message = refused(lambda: store.votes.add(make_vote(voter="ana")))
        assert "lost the connection to the vote database; nothing of this change was stored" in message
        assert (count(store, "votes"), count(store, "responses")) == (0, 0)
        vote_id = store.votes.add(make_vote(voter="ana"))
        assert [v.id for v in store.votes.list()] == [vote_id] and count(store, "responses") == 2


def test_a_new_database_gets_the_current_schema_and_a_newer_one_is_refused(pg_url: str) -> None:
    with open_store(pg_url) as store, store.database.transaction() as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(len(migrations.MIGRATIONS),)]
        db.execute("UPDATE schema_version SET version = 99")
    message = refused(lambda: open_store(pg_url))
    assert "schema version 99, newer than this playground knows (7)" in message


def race(stores: tuple[Store, Store], cast: Any, n: int = 8) -> list[str]:
    """`cast(store)` from n threads at once, alternating between the two stores: "stored", or the
    refusal's message, per call."""
    outcomes: list[str] = []
    start = threading.Barrier(n)

    def one(store: Store) -> None:
        start.wait()
        try:
            cast(store)
            outcomes.append("stored")
        except PlaygroundError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=one, args=(stores[k % 2],)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_two_stores_on_one_database_share_votes_and_a_queue_vote_is_stored_once(pg_url: str) -> None:
    """Two app replicas: what one stores the other reads; eight simultaneous casts of one voter's
    queue vote on one prompt, from both, store exactly one."""
    with open_store(pg_url) as one, open_store(pg_url) as two:
        pset = one.prompt_sets.add("s", "f.jsonl", [SetPrompt("q0", [{"role": "user", "content": "Hi?"}])])
        item = one.prompt_sets.prompts(pset.id)[0].id
        outcomes = race((one, two), lambda store: store.votes.add_queue_vote(make_vote(voter="ana", item=item)))
        assert sorted(outcomes) == ["ana has already voted on this prompt; take the next one"] * 7 + ["stored"]
        assert [v.item for v in two.votes.list()] == [item]
        one.checkpoints.register("ckpt-1", Path("/ckpt/ckpt-1"), None, {"steps": []})
        assert [c.id for c in two.checkpoints.list()] == ["ckpt-1"]


def test_two_replicas_racing_for_a_voter_s_last_votes_of_the_day_store_exactly_the_cap(pg_url: str) -> None:
    """A daily cap of 3 and eight simultaneous votes by one voter through two stores: three are
    stored, five refused naming the cap (the count and the insert are serialised per voter)."""
    with open_store(pg_url) as one, open_store(pg_url) as two:
        outcomes = race((one, two), lambda store: store.votes.add(make_vote(voter="ana"), daily_cap=3))
        assert outcomes.count("stored") == 3 and len(one.votes.list(voter="ana")) == 3
        assert all("--max-votes-per-day 3" in o for o in outcomes if o != "stored")


def test_the_db_flag_beats_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert db_location(None, tmp_path) == tmp_path / "votes.sqlite"
    monkeypatch.setenv(DB_URL_ENV, "postgresql://ana@db.lab/votes")
    assert db_location(None, tmp_path) == "postgresql://ana@db.lab/votes"
    assert db_location("other.sqlite", tmp_path) == "other.sqlite"


def test_the_app_state_opens_a_postgres_store(tiny_model_dir: Path, home: Path, pg_url: str) -> None:
    from playground.models.roles import ModelsConfig
    from service.state import build_state

    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home, db_path=with_password(pg_url))
    try:
        assert state.store.database.dialect == "postgresql" and state.store.database.path is None
        assert PASSWORD not in state.store.database.location and not (home / "votes.sqlite").exists()
        state.store.votes.add(make_vote())
        assert state.store.votes.counts_by_voter() == {"ana": 1}
    finally:
        state.store.close()
