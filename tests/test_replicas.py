"""Several app replicas on one vote database: votes from each stored once, checkpoints one trains
listed and served by the others, one training run at a time over all of them (a lock in the
database that its holder's death lets go), and kill -9 of one replica during a vote burst."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.load import connect, generate_round, submit_vote
from playground.core.errors import PlaygroundError
from playground.data.store import open_store
from playground.models.roles import ModelsConfig, adapter_params
from playground.training.dpo import DPOConfig
from service import training
from service.state import AppState, RunLock, build_state
from tests.conftest import make_vote
from tests.test_faults import VoteBurst, serving_app

FAST = DPOConfig(steps=2, lr=5e-3, batch_size=2)
REFUSED = r"training refused: replica {host}:{pid} has been training since \d\d:\d\d; wait for it to finish"
# Takes the training lock on the database named by argv[1], says so, and holds it until killed.
HOLDER = """
import sys
from playground.data.store import open_store
lock = open_store(sys.argv[1]).database.training_lock()
assert lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One vote database, as every replica's --db names it."""
    return request.getfixturevalue("pg_url") if request.param == "postgres" else str(tmp_path / "votes.sqlite")


@pytest.fixture
def replicas(tiny_model_dir: Path, tmp_path: Path, pg_url: str) -> Iterator[tuple[AppState, AppState]]:
    """Two app states on one PostgreSQL database and one (shared) data directory."""
    cfg = ModelsConfig(sft=str(tiny_model_dir))
    a = build_state(cfg, tmp_path / "shared", db_path=pg_url)
    b = build_state(cfg, tmp_path / "shared", db_path=pg_url)
    yield a, b
    a.store.close()
    b.store.close()


def same_weights(a: AppState, b: AppState) -> bool:
    left, right = adapter_params(a.models.policy.model), adapter_params(b.models.policy.model)
    return left.keys() == right.keys() and all(torch.equal(left[n], right[n]) for n in left)


def test_two_replicas_share_votes_checkpoints_and_what_serves(
        replicas: tuple[AppState, AppState], caplog: pytest.LogCaptureFixture) -> None:
    a, b = replicas
    ids = [a.store.votes.add(make_vote(voter="ana")) for _ in range(3)]
    ids += [b.store.votes.add(make_vote(voter="bo", outcome="b")) for _ in range(3)]
    assert len(set(ids)) == 6
    assert [v.id for v in a.store.votes.list()] == [v.id for v in b.store.votes.list()] == sorted(ids)
    assert b.store.votes.counts_by_voter() == {"ana": 3, "bo": 3}

    first = training.start_training(a, FAST).result(timeout=300).checkpoint
    assert first is not None and first.name not in b.checkpoints
    # B's Train tab lists it and B serves it: the same adapter weights as on A.
    assert [r.id for r in training.checkpoint_records(b)] == [first.name]
    assert first.name in b.checkpoints and b.models.policy.ident == a.models.policy.ident
    assert b.rated_name("policy") == first.name and same_weights(a, b)

    # While A trains, B is refused with who trains; after, B trains and A serves B's checkpoint.
    assert a.training.acquire()
    with pytest.raises(PlaygroundError, match=REFUSED.format(host=socket.gethostname(), pid=os.getpid())):
        training.start_training(b, FAST)
    assert not b.training.locked()
    a.training.release()
    second = training.start_training(b, FAST).result(timeout=300).checkpoint
    assert second is not None and not same_weights(a, b)
    assert a.sync_checkpoints() == [second.name]
    assert a.rated_name("policy") == second.name and same_weights(a, b)

    # A serves the first again (a click on its Train tab): B follows at its next round.
    a.serve(first.name)
    assert b.sync_checkpoints() == [] and b.rated_name("policy") == first.name and same_weights(a, b)

    # A checkpoint registered where this replica cannot see its folder is never attached or served.
    a.store.checkpoints.register("dpo-elsewhere", Path("/nowhere/dpo-elsewhere"), None, {})
    a.store.checkpoints.set_serving("dpo-elsewhere")
    with caplog.at_level(logging.WARNING, logger="service.state"):
        assert b.sync_checkpoints() == [] and b.sync_checkpoints() == []
    assert "dpo-elsewhere" not in b.checkpoints and b.rated_name("policy") == first.name
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once for the folder, once for the serving record: not at every round
    assert "dpo-elsewhere: no complete folder at /nowhere/dpo-elsewhere" in warnings[0]


def test_a_replica_started_later_serves_what_the_others_serve(replicas: tuple[AppState, AppState],
                                                              tiny_model_dir: Path, tmp_path: Path,
                                                              pg_url: str) -> None:
    a, _ = replicas
    for outcome in "ab":  # two answers of their own: a repeat vote on the same ones would be left out of training
        a.store.votes.add(make_vote(outcome=outcome, texts=(f"sft says {outcome}", "policy says")))
    trained = training.start_training(a, FAST).result(timeout=300).checkpoint
    assert trained is not None
    late = build_state(ModelsConfig(sft=str(tiny_model_dir)), tmp_path / "elsewhere", db_path=pg_url)
    try:  # another data dir: the checkpoint is found at its registered (shared) path
        assert late.rated_name("policy") == trained.name and same_weights(a, late)
    finally:
        late.store.close()


def test_one_training_run_at_a_time_over_two_handles_on_one_database(location: str) -> None:
    with open_store(location) as one, open_store(location) as two:
        first, second = RunLock(one), RunLock(two)
        assert first.holder() is None
        before = time.time()
        assert first.acquire() and first.locked()
        assert not first.acquire()  # this process's own run
        assert not second.acquire() and not second.locked()
        holder = second.holder()
        assert holder is not None and (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
        assert before - 1 <= holder.since <= time.time() + 1
        first.release()
        assert first.holder() is None
        assert second.acquire() and not first.acquire()
        second.release()


@pytest.mark.slow
def test_the_training_lock_is_let_go_when_its_holder_is_killed(location: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, location], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with open_store(location) as store:
            lock = store.database.training_lock()
            assert not lock.acquire()
            held_by = lock.holder()
            assert held_by is not None and held_by.pid == holder.pid
            os.kill(holder.pid, signal.SIGKILL)
            assert holder.wait(timeout=30) == -signal.SIGKILL
            # SQLite: the kernel dropped the flock with the process. PostgreSQL: the server ends the
            # dead client's session a moment later; pg_locks says when.
            deadline = time.monotonic() + 30
            while lock.holder() is not None:
                assert time.monotonic() < deadline, "the dead holder's lock was never let go"
                time.sleep(0.05)
            assert lock.acquire() and lock.holder() is not None
            lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


@pytest.mark.slow
def test_kill_9_of_one_replica_mid_burst_loses_no_acknowledged_vote(tiny_model_dir: Path, tmp_path: Path,
                                                                     pg_url: str) -> None:
    home = tmp_path / "home"  # one shared data directory, as on shared storage
    burst = VoteBurst(target=8, timeout=60)
    with serving_app(tiny_model_dir, home, tmp_path, flags=("--db", pg_url)) as doomed, \
            serving_app(tiny_model_dir, home, tmp_path, flags=("--db", pg_url)) as survivor:
        for app, tag in ((doomed, "doomed"), (survivor, "survivor")):
            for i in range(2):
                burst.start(app.url, f"{tag}-{i}")
        burst.enough.wait(timeout=180)
        burst.kill(doomed)  # mid-burst: its voters are generating or voting right now
        after = connect(survivor.url)  # the survivor still answers a new voter
        try:
            generate_round(after, seed=7, timeout=60)
            late = submit_vote(after, "a", "after-kill", timeout=60)
        finally:
            after.close()
        burst.stop.set()
        burst.join(timeout=120)
    acknowledged = burst.acknowledged
    assert burst.failures == []  # the killed replica's voters may fail: that is the test
    assert late is not None
    assert sum(map(len, acknowledged.values())) >= 8, "the burst never got going"

    with open_store(pg_url) as store:
        votes = store.votes.list()
    stored = Counter(v.voter for v in votes)
    assert all(len(v.responses) == 2 for v in votes)  # no half-written vote
    acked = {vote_id for ids in acknowledged.values() for vote_id in ids}
    assert acked | {late} <= {v.id for v in votes}  # every acknowledged vote, each id once (its key)
    for name, ids in acknowledged.items():  # and no vote twice: only the killed replica's last may lack an ack
        extra = stored[name] - len(ids)
        assert extra == 0 or (name.startswith("doomed") and extra == 1), (name, stored[name], len(ids))
    assert stored["after-kill"] == 1
