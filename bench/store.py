"""The vote store under concurrent writers: votes/s and latency of `store.votes.add` on SQLite and on
PostgreSQL, same machine, one run.

`playground bench store [--votes 480]` — for 1, 8 and 32 writer threads sharing one `Store`
(as Gradio's workers share the app's), each backend gets a fresh database and the threads add
`--votes` votes between them (a 2-response vote: one `votes` row and two `responses` rows, one
transaction). Both are durable: SQLite in WAL with synchronous=FULL, PostgreSQL with its defaults
(fsync on, synchronous_commit on), a throwaway local cluster (playground/data/pg_cluster.py) over
TCP on 127.0.0.1. Afterwards every vote must be stored exactly once.

SQLite runs one write transaction at a time behind the Store's lock; PostgreSQL runs up to
`db.POOL_SIZE` of them at once and groups their commits' flushes.
"""

import argparse
import itertools
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import report
from playground.data.db import POOL_SIZE
from playground.data.pg_cluster import LocalCluster
from playground.data.store import Store, open_store
from playground.data.votes import Response, Vote

WRITERS = (1, 8, 32)
PROMPT = [{"role": "user", "content": "Which answer is better?"}]


def a_vote(writer: int, i: int) -> Vote:
    responses = (Response("policy", f"answer {i} " * 20, {"logp_policy": -12.5}),
                 Response("sft", f"other {i} " * 20, {"logp_policy": -14.0}))
    return Vote(prompt=PROMPT, responses=responses, outcome="a" if i % 2 else "b", voter=f"voter-{writer}",
                settings={"seed": i, "temperature": 0.7})


def run(store: Store, writers: int, votes: int) -> dict[str, Any]:
    """`votes` add_vote calls split between `writers` threads started together; latencies in ms."""
    per_writer = votes // writers
    latencies: list[list[float]] = [[] for _ in range(writers)]
    start = threading.Barrier(writers + 1)

    def write(n: int) -> None:
        start.wait()
        for i in range(per_writer):
            t0 = time.perf_counter()
            store.votes.add(a_vote(n, i))
            latencies[n].append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = sorted(itertools.chain.from_iterable(latencies))
    stored = store.votes.counts_by_voter()
    assert stored == {f"voter-{n}": per_writer for n in range(writers)}, stored  # none lost, none twice
    return {"writers": writers, "votes": len(ms), "votes_per_s": round(len(ms) / wall, 1),
            "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
            "max_ms": round(ms[-1], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=480, help="votes per backend and writer count (default: 480)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    cluster = LocalCluster(durable=True)
    try:
        cluster.start()
        with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
            for writers in WRITERS:
                for backend in ("sqlite", "postgresql"):
                    if backend == "sqlite":
                        location: str | Path = Path(folder) / f"votes-{writers}.sqlite"
                    else:
                        cluster.admin(f"CREATE DATABASE bench_{writers}")
                        location = cluster.url(f"bench_{writers}")
                    with open_store(location) as store:
                        store.votes.add(a_vote(-1, 0))  # warm: connections open, statements prepared
                        store.undo_last_vote("voter--1")
                        rows.append({"backend": backend, **run(store, writers, args.votes)})
                    print(rows[-1], flush=True)
    finally:
        cluster.remove()
    by = {(r["backend"], r["writers"]): r for r in rows}
    report("store", rows, {
        "postgres_over_sqlite_votes_per_s": {w: round(by["postgresql", w]["votes_per_s"]
                                                      / by["sqlite", w]["votes_per_s"], 2) for w in WRITERS},
        "postgres_pool_size": POOL_SIZE,
        "settings": "both durable: SQLite WAL + synchronous=FULL; PostgreSQL 15 defaults (fsync, synchronous_commit "
                    "on), local cluster over TCP 127.0.0.1; one Store shared by the writer threads",
    }, load_before)

