"""The vote store: round trips, filters, undo, counts, imports and threads on SQLite and PostgreSQL
(`on_both_backends`); SQLite's pragmas and its migrations of older files. PostgreSQL's own faults:
test_store_postgres.py."""

import dataclasses
import json
import re
import sqlite3
import threading
from pathlib import Path

import pytest

from playground.core.errors import PlaygroundError
from playground.data.rows import PreferenceRow
from playground.data.store import Store, db_location, migrations, open_store
from playground.data.votes import Response, Vote
from tests.conftest import make_vote
from tests.postgres import on_both_backends

PROMPT = [{"role": "user", "content": "Name a colour."}]


def count(store: Store, table: str) -> int:
    """Rows in `table`, read through the store's own connection."""
    with store.database.transaction() as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def vote(voter: str = "ana", models: tuple[str, ...] = ("sft", "policy"), outcome: str = "a",
         ranking: tuple[int, ...] | None = None, created_at: float = 1000.0) -> Vote:
    """This file's vote: voter first, a policy log-probability per response, fixed settings and time."""
    return make_vote(models, outcome, scores=[{"logp_policy": -1.5 * i} for i in range(len(models))], prompt=PROMPT,
                     voter=voter, ranking=ranking, settings={"seed": 3, "max_new_tokens": 64}, created_at=created_at)


@on_both_backends
def test_round_trip_keeps_every_field(store: Store) -> None:
    ranked = make_vote(("sft", "ckpt-0003", "reference"), "ranking", texts=("red", "blue", "ünïcode ✓"),
                       scores=({"logp_policy": -3.25, "reward": 0.5}, {}, {}),
                       prompt=[{"role": "system", "content": "Be kind."}, *PROMPT], voter="bob", ranking=(2, 0, 1),
                       settings={"seed": 11, "temperature": 0.7}, anonymous=True, created_at=1234.5)
    vote_id = store.votes.add(ranked)
    assert store.votes.list() == [dataclasses.replace(ranked, id=vote_id)]


@on_both_backends
def test_filters(store: Store) -> None:
    ids = [
        store.votes.add(vote("ana", ("sft", "policy"), created_at=100.0)),
        store.votes.add(vote("bob", ("sft", "ckpt-0001"), created_at=200.0)),
        store.votes.add(vote("ana", ("policy", "ckpt-0001"), "tie", created_at=300.0)),
    ]
    assert [v.id for v in store.votes.list()] == ids
    assert [v.id for v in store.votes.list(voter="ana")] == [ids[0], ids[2]]
    assert [v.id for v in store.votes.list(voter=" ana ")] == [ids[0], ids[2]]
    assert [v.id for v in store.votes.list(model="ckpt-0001")] == [ids[1], ids[2]]
    assert [v.id for v in store.votes.list(since=200.0)] == [ids[1], ids[2]]
    assert [v.id for v in store.votes.list(voter="ana", model="policy", since=150.0)] == [ids[2]]
    assert store.votes.list(voter="carol") == []


@on_both_backends
def test_undo_removes_only_that_voters_last_vote(store: Store) -> None:
    first = store.votes.add(vote("ana", created_at=1.0))
    second = store.votes.add(vote("ana", outcome="b", created_at=2.0))
    bobs = store.votes.add(vote("bob", created_at=3.0))

    undone = store.undo_last_vote("ana")
    assert undone is not None and undone.id == second and undone.outcome == "b"
    assert [v.id for v in store.votes.list()] == [first, bobs]
    assert store.votes.counts_by_model() == {"policy": 2, "sft": 2}  # the undone vote's responses went too

    assert store.undo_last_vote("ana").id == first  # type: ignore[union-attr]
    assert store.undo_last_vote("ana") is None
    assert store.undo_last_vote("carol") is None
    assert [v.id for v in store.votes.list()] == [bobs]
    assert store.votes.add(vote("ana")) > bobs  # an undone id is never handed out again


@on_both_backends
def test_counts(store: Store) -> None:
    store.votes.add(vote("ana", ("sft", "policy")))
    store.votes.add(vote("ana", ("sft", "policy", "ckpt-0002"), "ranking", (2, 1, 0)))
    store.votes.add(vote("bob", ("policy", "reference")))
    assert store.votes.counts_by_voter() == {"ana": 2, "bob": 1}
    assert store.votes.counts_by_model() == {"ckpt-0002": 1, "policy": 3, "reference": 1, "sft": 2}


def test_pragmas_and_schema_version(store: Store, db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(migrations.MIGRATIONS) == 7
    raw.close()
    # synchronous and foreign_keys are per connection: look at the store's own.
    with store.database.transaction() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_migrations_run_once_and_the_next_one_alone(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    shipped = migrations.MIGRATIONS

    def initial(db: sqlite3.Connection) -> None:  # every shipped migration, as if they were one
        calls.append(1)
        for migration in shipped:
            migration(db)

    def add_note_column(db: sqlite3.Connection) -> None:
        calls.append(2)
        db.execute("ALTER TABLE votes ADD COLUMN note TEXT")

    monkeypatch.setattr(migrations, "MIGRATIONS", (initial,))
    with open_store(db_path) as s:
        vote_id = s.votes.add(vote())
    with open_store(db_path):
        pass
    assert calls == [1]

    monkeypatch.setattr(migrations, "MIGRATIONS", (initial, add_note_column))
    with open_store(db_path) as s:
        assert s.votes.list() == [dataclasses.replace(vote(), id=vote_id)]
    with open_store(db_path):
        pass
    assert calls == [1, 2]
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "note" in [row[1] for row in raw.execute("PRAGMA table_info(votes)")]
    raw.close()


def test_a_newer_database_is_refused(db_path: Path) -> None:
    open_store(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(PlaygroundError, match=r"schema version 99, newer than this playground knows \(7\)"):
        open_store(db_path)


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.sqlite"
    notes.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(PlaygroundError, match=re.escape(f"{notes}: not a usable SQLite vote database")):
        open_store(notes)
    assert notes.read_text().startswith("these are my notes")
    with pytest.raises(PlaygroundError, match=re.escape(str(tmp_path))):
        open_store(tmp_path)  # a folder


def test_the_default_location_is_in_the_data_dir(home: Path) -> None:
    assert db_location(None) == home / "votes.sqlite"


@on_both_backends
def test_imported_pairs_round_trip(store: Store) -> None:
    rows = [
        PreferenceRow("2+2?", "4", "5", {"source": "math", "score": 0.5}),
        PreferenceRow([{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "hello"}],
                      [{"role": "assistant", "content": "go away"}]),
    ]
    assert store.imports.add_pairs(rows, "pairs.jsonl") == 2
    assert store.imports.add_pairs(rows[:1], "more.csv") == 1
    assert store.imports.pairs() == [*rows, rows[0]]
    assert store.votes.list() == []


@on_both_backends
def test_import_is_all_or_nothing(store: Store) -> None:
    good = PreferenceRow("q", "good", "bad")
    unstorable = PreferenceRow({"not", "json"}, "good", "bad")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.imports.add_pairs([good, good, unstorable], "broken.jsonl")
    assert store.imports.pairs() == []
    assert count(store, "import_batches") == 0


@on_both_backends
def test_training_pairs_are_vote_pairs_then_imported(store: Store) -> None:
    vote_id = store.votes.add(vote("ana", ("sft", "policy", "reference"), "ranking", (1, 2, 0)))
    store.votes.add(vote("bob", outcome="both_bad"))
    imported = PreferenceRow([{"role": "user", "content": "q"}], [{"role": "assistant", "content": "y"}],
                             [{"role": "assistant", "content": "n"}], {"origin": "hh"})
    store.imports.add_pairs([imported], "hh.jsonl")

    pairs = store.training_pairs("all_pairs", 0)
    assert [(p.chosen[0]["content"], p.rejected[0]["content"]) for p in pairs] == [
        ("policy says 1", "reference says 2"), ("policy says 1", "sft says 0"), ("reference says 2", "sft says 0"),
        ("y", "n"),
    ]
    assert pairs[0].prompt == PROMPT
    assert pairs[0].extra == {"vote_id": vote_id, "chosen_model": "policy", "rejected_model": "reference",
                              "voter": "ana"}
    assert pairs[-1] == imported
    best = store.training_pairs("best_vs_random", 1)
    assert len(best) == 2 and best[0].extra["chosen_model"] == "policy"
    assert store.training_pairs("best_vs_random", 1) == best


@on_both_backends
def test_another_connection_sees_committed_votes(store: Store, request: pytest.FixtureRequest) -> None:
    vote_id = store.votes.add(vote())
    with open_store(store.database.path or request.getfixturevalue("pg_url")) as other:
        assert [v.id for v in other.votes.list()] == [vote_id]
        other.undo_last_vote("ana")
    assert store.votes.list() == []


@on_both_backends
def test_threads_share_one_store(store: Store) -> None:
    errors: list[BaseException] = []

    def cast(voter: str) -> None:
        try:
            for i in range(25):
                store.votes.add(vote(voter, outcome="a" if i % 2 else "b"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cast, args=(f"voter-{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    votes = store.votes.list()
    assert len(votes) == 200
    assert len({v.id for v in votes}) == 200
    assert store.votes.counts_by_voter() == {f"voter-{n}": 25 for n in range(8)}
    assert count(store, "responses") == 400


def test_version_1_database_migrates_and_keeps_its_votes(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    open_store(db_path).close()
    raw = sqlite3.connect(db_path)  # a vote as version 1 wrote it (no `item` column yet)
    raw.execute("INSERT INTO votes (prompt, outcome, voter, settings, anonymous, created_at) "
                "VALUES (?, 'a', 'ana', '{}', 0, 1000.0)", (json.dumps(PROMPT),))
    raw.executemany("INSERT INTO responses (vote_id, slot, model, text, scores) VALUES (1, ?, ?, ?, '{}')",
                    [(0, "sft", "red"), (1, "policy", "blue")])
    raw.commit()
    raw.close()
    monkeypatch.undo()
    with open_store(db_path) as s:  # the shipped code: migrates 1 → 3 and keeps the votes
        [old] = s.votes.list()
        assert old.id == 1 and old.item is None and [r.text for r in old.responses] == ["red", "blue"]
        s.checkpoints.register("ckpt-a", db_path.parent / "ckpt-a", None, {"steps": [{"loss": 0.69}]})
        s.checkpoints.register("ckpt-b", db_path.parent / "ckpt-b", "ckpt-a", {"steps": []})
        assert [(c.id, c.path, c.parent) for c in s.checkpoints.list()] == [
            ("ckpt-a", db_path.parent / "ckpt-a", None), ("ckpt-b", db_path.parent / "ckpt-b", "ckpt-a")]
        assert s.checkpoints.list()[0].record == {"steps": [{"loss": 0.69}]}


def test_version_4_rated_names_move_from_settings_onto_the_responses(db_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
    open_store(db_path).close()
    raw = sqlite3.connect(db_path)  # votes as version 4 wrote them: the rated names in settings
    for rated in (["ckpt-1", "sft"], ["ckpt-1"], ["ckpt-1", ""], None):
        settings = {"seed": 3, **({"rated_as": rated} if rated is not None else {})}
        vote_id = raw.execute("INSERT INTO votes (prompt, outcome, voter, settings, anonymous, created_at) "
                              "VALUES (?, 'a', 'ana', ?, 0, 1000.0)", (json.dumps(PROMPT), json.dumps(settings))
                              ).lastrowid
        raw.executemany("INSERT INTO responses (vote_id, slot, model, text, scores) VALUES (?, ?, ?, ?, '{}')",
                        [(vote_id, 0, "policy", "red"), (vote_id, 1, "reference", "blue")])
    raw.execute("INSERT INTO prompt_sets (name, source, created_at) VALUES ('s', 'f', 0)")
    raw.execute("INSERT INTO set_prompts (set_id, position, ref, prompt) VALUES (1, 0, 'q0', ?)", (json.dumps(PROMPT),))
    raw.execute("INSERT INTO set_responses (prompt_id, model, text, scores, settings, created_at) "
                "VALUES (1, 'policy', 'hi', '{}', '{}', 0)")
    raw.commit()
    raw.close()
    monkeypatch.undo()
    with open_store(db_path) as s:
        moved, short, empty, none = s.votes.list()
        assert [r.rated_as for r in moved.responses] == ["ckpt-1", "sft"] and moved.settings == {"seed": 3}
        for kept in (short, empty, none):  # malformed or absent: rated as shown, as before
            assert [r.rated_as for r in kept.responses] == [None, None]
        assert short.settings["rated_as"] == ["ckpt-1"]
        assert s.prompt_sets.responses(1)["policy"].rated_as is None
    raw = sqlite3.connect(db_path)  # stored as a column now, not inside settings
    assert raw.execute("SELECT rated_as FROM responses WHERE vote_id = 1 ORDER BY slot").fetchall() == [
        ("ckpt-1",), ("sft",)]
    assert "rated_as" not in json.loads(raw.execute("SELECT settings FROM votes WHERE id = 1").fetchone()[0])
    raw.close()


@on_both_backends
def test_rated_names_round_trip(store: Store) -> None:
    responses = (Response("policy", "x", {}, "ckpt-2"), Response("reference", "y", {}, "sft"))
    rated = make_vote(("policy", "reference"), "b", texts=("x", "y"), rated_as=("ckpt-2", "sft"), prompt=PROMPT)
    assert rated.responses == responses
    vote_id = store.votes.add(rated)
    assert store.votes.list()[0].responses == responses and store.votes.list()[0].id == vote_id
    legacy = make_vote(("policy", "sft"), texts=("x", "y"), prompt=PROMPT, voter="bo",
                       settings={"rated_as": ["ckpt-3", "sft"]})  # a caller of schema 4
    assert [r.rated_as for r in legacy.responses] == ["ckpt-3", "sft"] and legacy.settings == {}
    with pytest.raises(PlaygroundError, match="rated name"):
        Response("policy", "x", {}, " ")
