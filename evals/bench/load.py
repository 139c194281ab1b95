"""Many simulated voters against one app: votes/s, generate and vote latency, and no vote lost.

`python -m evals.bench.load [--voters 100]` — serves the app in this process on a tiny random
model (so the numbers are about the server, the queue and the database, not the model), then starts
N voters at once, each in its own thread with its own `gradio_client` session, each calling the
named endpoints `/generate` then `/vote` as the page does. Afterwards every acknowledged vote
("Vote #<id>" in the reply) must be in the database exactly once, and nothing else.

The app queues `/generate` with concurrency 1 (one model, one batch at a time), so generate latency
grows with N: the p95 is roughly N × one round's time.
"""

import argparse
import re
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.bench.common import report

OUTCOMES = ("a", "b", "tie", "both_bad")
VOTE_ID = re.compile(r"Vote #(\d+)")
# /generate's sampling settings (the seed is set per voter) — sampled,
# because the random tiny model's greedy text is whitespace.
SETTINGS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 4, "repetition_penalty": 1.0}
BETA = 0.1


@dataclass
class VoterResult:
    voter: str
    outcome: str
    generate_s: float | None = None
    vote_s: float | None = None
    vote_id: int | None = None  # set only when the app acknowledged the vote
    error: str | None = None


@dataclass
class LoadResult:
    voters: list[VoterResult]
    seconds: float  # from the common start to the last voter's reply

    @property
    def acknowledged(self) -> list[int]:
        return [v.vote_id for v in self.voters if v.vote_id is not None]

    @property
    def errors(self) -> list[str]:
        return [f"{v.voter}: {v.error}" for v in self.voters if v.error]


@dataclass
class VoteCheck:
    stored: int  # votes in the database
    acknowledged: int
    missing: list[int] = field(default_factory=list)  # acknowledged, not stored
    duplicated: list[int] = field(default_factory=list)  # stored more than once (by id or by voter)
    unexpected: list[int] = field(default_factory=list)  # stored, never acknowledged
    mismatched: list[int] = field(default_factory=list)  # stored under the id with another voter/outcome

    @property
    def ok(self) -> bool:
        return (self.stored == self.acknowledged
                and not (self.missing or self.duplicated or self.unexpected or self.mismatched))


@contextmanager
def serve(model_dir: Path, home: Path) -> Iterator[tuple[Any, str]]:  # -> (AppState, local URL)
    """The app on `model_dir` with its data in `home`, served in this process on a free port."""
    from playground.models.roles import ModelsConfig
    from service.state import build_state
    from ui.app import build_demo, launch_kwargs

    state = build_state(ModelsConfig(sft=str(model_dir)), home)
    demo = build_demo(state)
    # The queue as app.py sets it up (one event of a kind at a time).
    demo.queue(default_concurrency_limit=1).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs(state))
    try:
        yield state, demo.local_url
    finally:
        demo.close()
        state.store.close()


def voter_name(index: int) -> str:
    return f"voter-{index:03d}"


def generate_round(client: Any, seed: int, timeout: float) -> None:  # client: gradio_client.Client
    """`/generate` as the page calls it: two slots, policy against reference, sampled."""
    client.submit(prompt="Say hi.", system="", k=2, mode="Side by side", model_a="policy", model_b="reference",
                  model_c="sft", model_d="policy", **SETTINGS, seed=seed, beta=BETA,
                  api_name="/generate").result(timeout=timeout)


def submit_vote(client: Any, outcome: str, voter: str, timeout: float) -> int | None:
    """`/vote` on the session's current round; the acknowledged vote id, or None if the reply has none."""
    reply = client.submit(outcome, [], voter, api_name="/vote").result(timeout=timeout)
    found = VOTE_ID.search(str(reply))
    return int(found.group(1)) if found else None


def connect(url: str) -> Any:  # -> gradio_client.Client
    """A client with its own session (so its own round), quiet and without telemetry."""
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False)


def _one_voter(url: str, index: int, start: threading.Barrier, timeout: float) -> VoterResult:
    result = VoterResult(voter_name(index), OUTCOMES[index % len(OUTCOMES)])
    client = None
    try:
        client = connect(url)
    except Exception as exc:
        result.error = f"connect: {type(exc).__name__}: {exc}"
    # Every thread reaches the barrier, connected or not, so one failure does not stall the rest.
    start.wait(timeout)
    if client is None:
        return result
    try:
        began = time.perf_counter()
        generate_round(client, index, timeout)
        generated = time.perf_counter()
        result.generate_s = generated - began
        result.vote_id = submit_vote(client, result.outcome, result.voter, timeout)
        result.vote_s = time.perf_counter() - generated
        if result.vote_id is None:
            result.error = "vote not acknowledged"
    except Exception as exc:  # recorded, so the caller sees every failure, not just the first
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return result


def run_voters(url: str, n: int, timeout: float = 600.0) -> LoadResult:
    """N voters, each in its own thread and session, all starting `/generate` at once."""
    start = threading.Barrier(n + 1)
    results: list[VoterResult | None] = [None] * n

    def work(i: int) -> None:
        results[i] = _one_voter(url, i, start, timeout)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start.wait(timeout)  # released once every voter is connected
    began = time.perf_counter()
    for t in threads:
        t.join(timeout)
    seconds = time.perf_counter() - began
    voters = [r or VoterResult(voter_name(i), OUTCOMES[i % len(OUTCOMES)], error="voter thread did not finish")
              for i, r in enumerate(results)]
    return LoadResult(voters, seconds)


def check_votes(store: Any, result: LoadResult) -> VoteCheck:  # store: playground.data.store.Store
    """Compare the database with what the voters were told: each acknowledged vote stored once,
    under its id, with its voter and outcome, and no vote that nobody was told about."""
    stored = store.votes()
    by_id = {v.id: v for v in stored}
    ids = Counter(v.id for v in stored)
    per_voter = Counter(v.voter for v in stored)
    acked = {v.vote_id: v for v in result.voters if v.vote_id is not None}
    check = VoteCheck(stored=len(stored), acknowledged=len(acked))
    check.missing = sorted(i for i in acked if i not in by_id)
    check.duplicated = sorted({i for i, c in ids.items() if c > 1}
                              | {v.id for v in stored if per_voter[v.voter] > 1})
    check.unexpected = sorted(i for i in by_id if i not in acked)
    check.mismatched = sorted(i for i, v in acked.items()
                              if i in by_id and (by_id[i].voter, by_id[i].outcome) != (v.voter, v.outcome))
    return check


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), interpolated; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def summary_rows(result: LoadResult) -> list[dict[str, Any]]:
    rows = []
    for name, values in (("generate", [v.generate_s for v in result.voters if v.generate_s is not None]),
                         ("vote", [v.vote_s for v in result.voters if v.vote_s is not None])):
        rows.append({"endpoint": f"/{name}", "calls": len(values), "p50_s": percentile(values, 50),
                     "p95_s": percentile(values, 95), "max_s": max(values, default=float("nan"))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voters", type=int, default=100, help="simulated voters, all at once")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one call may wait")
    args = parser.parse_args()

    from playground.cli import quiet_libraries
    from tests.conftest import build_tiny_model

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny-llama")
        with serve(model_dir, Path(tmp) / "home") as (state, url):
            result = run_voters(url, args.voters, args.timeout)
            check = check_votes(state.store, result)
    extra = {
        "voters": args.voters,
        "seconds": result.seconds,
        "votes_per_s": len(result.acknowledged) / result.seconds,
        "acknowledged": check.acknowledged,
        "stored": check.stored,
        "missing": check.missing,
        "duplicated": check.duplicated,
        "unexpected": check.unexpected,
        "mismatched": check.mismatched,
        "errors": result.errors[:20],
        "all_acknowledged_stored_once": check.ok,
    }
    report("load", summary_rows(result), extra)
    if not check.ok or result.errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
