"""Crashes and a hostile environment lose nothing: kill -9 mid-vote and mid-training, an unwritable
data directory, a full disk.

The kill tests run the real `app.py` in a subprocess on the tiny model, so what is on disk after
the kill is exactly what a crashed server leaves.
"""

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.load import connect, generate_round, submit_vote
from playground.data.store import open_store
from playground.models.checkpoints import complete_checkpoints
from playground.models.roles import ModelsConfig
from service.state import SERVING, build_state
from tests.conftest import generate_call, running_app

ROOT = Path(__file__).resolve().parents[1]
# steps, β, lr, pairs per step, loss, ε, held-out fraction, seed
TRAIN_SHORT = (2, 0.1, 5e-3, 2, "sigmoid", 0.0, 0.2, 0)
TRAIN_LONG = (10_000, 0.1, 5e-3, 2, "sigmoid", 0.0, 0.2, 0)  # still running when it is killed


@dataclass
class App:
    proc: subprocess.Popen
    url: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _env(home: Path, tmp: Path) -> dict[str, str]:
    return {**os.environ, "PLAYGROUND_HOME": str(home), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_TEMP_DIR": str(tmp / "gradio"), "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_command(model_dir: Path, port: int, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "app.py"), "--sft", str(model_dir), "--port", str(port), *flags]


@contextmanager
def serving_app(model_dir: Path, home: Path, tmp: Path, timeout: float = 120, flags: tuple[str, ...] = ()
                ) -> Iterator[App]:
    """`app.py` (with more command-line `flags`) in a subprocess, once it answers its first page;
    killed (if still alive) on exit."""
    port = _free_port()
    log = tmp / f"app-{port}.log"
    with log.open("wb") as out:  # a file, not a pipe: a chatty server never blocks on a full pipe
        proc = subprocess.Popen(_app_command(model_dir, port, *flags), cwd=ROOT, env=_env(home, tmp), stdout=out,
                                stderr=subprocess.STDOUT)
    app = App(proc, f"http://127.0.0.1:{port}/", log)
    try:
        deadline = time.monotonic() + timeout
        while not _first_page_served(app.url):
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode} before serving:\n{app.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve within {timeout} s:\n{app.log_tail()}")
            time.sleep(0.1)
        yield app
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _first_page_served(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200 and b"<html" in response.read(4096).lower()
    except OSError:
        return False


def _kill_9(app: App) -> None:
    os.kill(app.proc.pid, signal.SIGKILL)
    assert app.proc.wait(timeout=30) == -signal.SIGKILL


class VoteBurst:
    """Voters, each its own `gradio_client` session, generating then voting in a loop against an
    app until `stop` is set or their app dies. `acknowledged` holds the vote ids each voter was told;
    `enough` is set once `target` votes are acknowledged, or at the first failure. A voter's failure
    is recorded in `failures` unless its app was killed through `kill` (that is the point of a
    kill -9 test)."""

    def __init__(self, target: int = 8, timeout: float = 30) -> None:
        self.target, self.timeout = target, timeout
        self.acknowledged: dict[str, list[int]] = {}
        self.failures: list[str] = []
        self.enough, self.stop = threading.Event(), threading.Event()
        self._killed: set[str] = set()  # URLs of the apps killed on purpose
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, url: str, name: str, seed_base: int = 0) -> None:
        thread = threading.Thread(target=self._vote, args=(url, name, seed_base), daemon=True)
        self._threads.append(thread)
        thread.start()

    def kill(self, app: App) -> None:
        self._killed.add(app.url)
        _kill_9(app)

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def ids(self) -> list[int]:
        with self._lock:
            return [vote_id for ids in self.acknowledged.values() for vote_id in ids]

    def _vote(self, url: str, name: str, seed_base: int) -> None:
        try:
            client = connect(url)
        except Exception as exc:
            self.failures.append(f"{name} connect: {exc!r}")
            self.enough.set()
            return
        try:
            for round_no in range(1000):
                if self.stop.is_set():
                    return
                generate_round(client, seed=seed_base + round_no, timeout=self.timeout)
                vote_id = submit_vote(client, "ab"[round_no % 2], name, timeout=self.timeout)
                if vote_id is None:
                    raise AssertionError("vote not acknowledged")
                with self._lock:
                    self.acknowledged.setdefault(name, []).append(vote_id)
                    if sum(map(len, self.acknowledged.values())) >= self.target:
                        self.enough.set()
        except Exception as exc:
            if url not in self._killed:
                self.failures.append(f"{name}: {exc!r}")
                self.enough.set()
        finally:
            client.close()


def _dropdown_choices(url: str, label: str) -> list[str]:
    """The values a dropdown offers on the served page (from the app's config)."""
    import json

    with urllib.request.urlopen(url + "config", timeout=10) as response:
        config = json.load(response)
    [choices] = [c["props"]["choices"] for c in config["components"]
                 if c.get("type") == "dropdown" and c.get("props", {}).get("label") == label]
    return [value for _, value in choices]


def test_the_store_syncs_every_commit_to_disk(tmp_path: Path) -> None:
    """Power-loss durability rests on WAL with synchronous=FULL (every commit fsynced); a process kill
    (the test below) cannot tell FULL from NORMAL, so the setting itself is checked on the live connection."""
    with open_store(tmp_path / "votes.sqlite") as store:
        assert tuple(store.database._backend.connection.execute("PRAGMA synchronous").fetchone()) == (2,)  # 2 = FULL
        assert tuple(store.database._backend.connection.execute("PRAGMA journal_mode").fetchone()) == ("wal",)


@pytest.mark.slow
def test_kill_9_during_a_vote_burst_keeps_every_acknowledged_vote(tiny_model_dir: Path, tmp_path: Path) -> None:
    """kill -9 of the app mid-burst: every vote the API acknowledged is in the database, none half
    written, and the app restarts on it. (This shows votes are acknowledged only once committed; it
    does not test power loss, which a process kill cannot simulate.)"""
    home = tmp_path / "home"
    burst = VoteBurst(target=8, timeout=30)
    with serving_app(tiny_model_dir, home, tmp_path) as app:
        for i in range(4):
            burst.start(app.url, f"burst-{i}", seed_base=i * 1000)
        burst.enough.wait(timeout=90)
        burst.kill(app)  # mid-burst: the four voters are generating or voting right now
        burst.join(timeout=60)
    acknowledged = burst.ids()
    assert burst.failures == []  # errors before the kill: real failures, not the crash's doing
    assert len(acknowledged) >= 8, "the burst never got going"
    assert len(set(acknowledged)) == len(acknowledged)

    db = sqlite3.connect(home / "votes.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {vote_id for (vote_id,) in db.execute("SELECT id FROM votes")}
        assert set(acknowledged) <= stored
        # No half-written vote: every stored vote has both its responses.
        assert dict(db.execute("SELECT vote_id, COUNT(*) FROM responses GROUP BY vote_id")) == dict.fromkeys(stored, 2)
    finally:
        db.close()

    # The restarted app opens the same database without repair, serves, and takes the next vote.
    with serving_app(tiny_model_dir, home, tmp_path) as app:
        client = connect(app.url)
        try:
            generate_round(client, seed=1, timeout=60)
            after = submit_vote(client, "a", "after-restart", timeout=60)
        finally:
            client.close()
    assert after is not None and after > max(stored)


@pytest.mark.slow
def test_kill_9_during_training_serves_the_last_good_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    checkpoint_dir = home / "checkpoints"
    with serving_app(tiny_model_dir, home, tmp_path) as app:
        client = connect(app.url)
        try:
            for i in range(6):
                generate_round(client, seed=i, timeout=60)
                assert submit_vote(client, "ab"[i % 2], "trainer", timeout=60) is not None
            client.submit(*TRAIN_SHORT, api_name="/train").result(timeout=180)  # one run that finishes
            [finished] = complete_checkpoints(checkpoint_dir)
            job = client.submit(*TRAIN_LONG, api_name="/train")
            deadline = time.monotonic() + 120
            while not any("Step " in str(update) for update in job.outputs()):
                assert not job.done(), f"the long run ended early: {job.outputs()[-1:]}"
                assert time.monotonic() < deadline, "no progress update from the long run"
                time.sleep(0.05)
            _kill_9(app)  # mid-run: steps are being taken, nothing of this run is written yet
        finally:
            client.close()

    assert complete_checkpoints(checkpoint_dir) == [finished]
    # Whatever else is there is a dot-named temporary folder, never a checkpoint-looking one.
    others = [p for p in checkpoint_dir.iterdir() if p not in (finished, checkpoint_dir / SERVING)]
    assert all(p.name.startswith(".") for p in others)
    # What a kill between writing a checkpoint and renaming it into place leaves: a complete-looking
    # folder under write_checkpoint's temporary name. It must not be listed or served.
    leftover = checkpoint_dir / f".{finished.name}.k1ll3d"
    shutil.copytree(finished, leftover)

    with serving_app(tiny_model_dir, home, tmp_path) as app:
        assert _dropdown_choices(app.url, "Checkpoint") == [finished.name]
        assert finished.name in _dropdown_choices(app.url, "Model for A")
        client = connect(app.url)
        try:  # selectable: a response slot generates from it, and a vote on it is stored
            client.submit(**generate_call("Say hi.", (finished.name, "reference"), max_new_tokens=4)).result(timeout=60)
            assert submit_vote(client, "a", "trainer", timeout=60) is not None
        finally:
            client.close()

    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home)
    try:
        assert list(state.checkpoints) == [finished.name]
        assert [c.id for c in state.store.checkpoints.list()] == [finished.name]
        # The last good checkpoint serves again as the policy (the killed run never replaced it).
        assert Path(state.models.policy.source) == finished and state.rated_name("policy") == finished.name
        assert state.store.votes.list()[-1].responses[0].model == finished.name
    finally:
        state.store.close()
    assert leftover.is_dir()  # left alone (not deleted, not registered): only ever ignored


@pytest.mark.slow
def test_an_unwritable_data_directory_is_one_error_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)  # enough for a normal user; root ignores modes, so it gets a read-only mount
    for home in (blocker / "home", read_only):  # the first cannot be created, even by root
        command = _app_command(tiny_model_dir, _free_port())
        if os.geteuid() == 0 and home == read_only:
            # A private mount namespace with the folder bind-mounted read-only: writes fail with EROFS for
            # root too (as CI runs), and nothing outside this one process sees the mount.
            command = ["unshare", "--mount", "sh", "-c",
                       'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(home), *command]
        proc = subprocess.run(command, cwd=ROOT, env=_env(home, tmp_path), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr
        assert str(home) in errors[0] and "data directory" in errors[0]


class DiskFull:
    """A connection that fails the way SQLite does when the disk fills: the statement `fails_on`
    starts with raises "database or disk is full". Failing at COMMIT, SQLite rolls the transaction
    back itself (sqlite3VdbeHalt); so does this stand-in."""

    def __init__(self, db: sqlite3.Connection, fails_on: str) -> None:
        self._db = db
        self._fails_on = fails_on

    def _check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(self._fails_on):
            if self._fails_on == "COMMIT":
                self._db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_full_disk_refuses_the_vote_and_stores_nothing(tiny_model_dir: Path, home: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home)

    def counts() -> tuple[int, int]:
        db = sqlite3.connect(state.store.database.path)
        try:
            return (db.execute("SELECT COUNT(*) FROM votes").fetchone()[0],
                    db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        finally:
            db.close()

    with running_app(state) as client:
        generate_round(client, seed=0, timeout=60)
        real = state.store.database._backend.connection
        # The vote row is written, then the disk fills: on its responses, or at the commit.
        for fails_on in ("INSERT INTO RESPONSES", "COMMIT"):
            monkeypatch.setattr(state.store.database._backend, "connection", DiskFull(real, fails_on))
            with pytest.raises(Exception, match="database or disk is full"):
                client.predict("a", [], "ana", api_name="/vote")
            monkeypatch.setattr(state.store.database._backend, "connection", real)
            assert not real.in_transaction  # nothing left open to be committed later
            assert counts() == (0, 0)
        # Space again: the same round can still be voted on, and is stored once.
        vote_id = submit_vote(client, "a", "ana", timeout=60)
        assert vote_id is not None
        assert counts() == (1, 2)
        assert [v.id for v in state.store.votes.list()] == [vote_id]
