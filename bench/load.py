"""Many simulated voters against one app: votes/s, time to first token, generate and vote latency,
how responsive the server stays, and no vote lost — the scheduler against the serialized path.

`playground bench load [--voters 100] [--real-voters 20] [--scenario tiny|best|team]` runs, in one
go, each scenario twice: the app as it ships (one continuous batch for every session,
`playground.inference.scheduler`) and with `--serial` (one request at a time: the path before the scheduler). The app
runs in a subprocess (`playground serve`, a fresh data folder each time), so its event loop shares no GIL
with the N voter threads here, each with its own `gradio_client` session calling `/generate` (streamed)
then `/vote` as the page does. Scenarios:

- tiny: N voters (default 100) on a tiny random Llama: the numbers are about the server, the queue
  and the database, not the model; 16 new tokens, sampled.
- best: M voters (default 20) on the packaged SmolLM2-135M, every voter on one prompt ("Say
  hi."), 32 new tokens, even voters greedy and odd ones at T = 0.7, against a fresh policy. The most
  a continuous batch can share: one prompt prefilled once, and a fresh policy (the reference's
  weights) scored in one pass.
- team: M voters as a team uses it: each its own prompt (the shipped eval and short-answer prompts,
  every other one behind a paragraph of context, so prompts run from 10 to ~120 tokens), new-token
  budgets of 16, 32, 48 and 64 in turn, greedy and T = 0.7 in turn, against a trained policy (a DPO
  checkpoint that `playground train` makes first, served with `--policy`), so every round is scored
  in two passes; then a vote each.

Both modes are warmed the same way: in every scenario but tiny, one voter alone runs a round first
(its row is "1 voter alone"), then all M at once.

Per voter: connect time (errors counted), time to first token (the first streamed update with
text), time to the end of generation (the "Scoring…" update), time to the full scored response,
vote time. Aggregate tokens/s = response tokens of every voter ÷ the span from the common start to
the last reply; generation tokens/s the same ÷ the span to the last end of generation (scoring,
which re-reads every response under policy and reference, excluded). While the voters run, a
prober in a process of its own loads the page every second and opens a fresh `gradio_client`
connection every 2 s: their p95 is how responsive the server stays. Afterwards every
acknowledged vote ("Vote #<id>") must be in the database exactly once, and nothing else.
"""

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.common import report

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("a", "b", "tie", "both_bad")
VOTE_ID = re.compile(r"Vote #(\d+)")
# /generate's sampling settings (the seed is set per voter) — sampled,
# because the random tiny model's greedy text is whitespace.
SETTINGS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 4, "repetition_penalty": 1.0}
BETA = 0.1
VOTER_NICENESS = 10  # the simulated voters' threads: the server and the prober come first (yield_cpu)
STATUS, TEXTS = 0, slice(1, 3)  # /generate's outputs: the status, then the 4 response texts


@dataclass
class VoterResult:
    voter: str
    outcome: str
    connect_s: float | None = None
    first_token_s: float | None = None  # from the call to the first streamed update with text
    generated_s: float | None = None  # from the call to the end of generation (scoring begins)
    generate_s: float | None = None
    vote_s: float | None = None
    texts: list[str] = field(default_factory=list)
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
def serve(model_dir: Path, home: Path, serial: bool = False) -> Iterator[tuple[Any, str]]:  # -> (AppState, URL)
    """The app on `model_dir` with its data in `home`, served in this process on a free port."""
    from playground.inference.scheduler import SchedulerConfig
    from playground.models.roles import ModelsConfig
    from service.state import build_state
    from ui.app import build_demo, launch_kwargs

    state = build_state(ModelsConfig(sft=str(model_dir)), home, scheduler=SchedulerConfig(serial=serial))
    demo = build_demo(state)
    # The queue as `playground serve` sets it up.
    demo.queue(default_concurrency_limit=1).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs(state))
    try:
        yield state, demo.local_url
    finally:
        demo.close()
        state.store.close()


def voter_name(index: int) -> str:
    return f"voter-{index:03d}"


@contextmanager
def app_process(model_dir: Path, home: Path, flags: tuple[str, ...] = (), timeout: float = 300) -> Iterator[str]:
    """`playground serve` on `model_dir` in a subprocess with its data in `home`; yields its URL once the
    first page answers, and stops it on exit."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PLAYGROUND_HOME": str(home), "GRADIO_TEMP_DIR": str(home / "gradio"),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = (home / "app.log").open("wb")
    command = [sys.executable, "-m", "cli", "serve", "--sft", str(model_dir), "--port", str(port), *flags]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while page_seconds(url) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the app did not serve: {(home / 'app.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def page_seconds(url: str, timeout: float = 10) -> float | None:
    """Seconds to load the page, or None when it did not answer."""
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except OSError:
        return None
    return time.perf_counter() - began


@dataclass(frozen=True)
class Generated:
    first_token_s: float | None  # to the first streamed update with text
    generated_s: float | None  # to the "Scoring…" update: every token generated, scoring begins
    texts: list[str]


def generate_round(client: Any, seed: int, timeout: float,  # client: gradio_client.Client
                   settings: dict[str, Any] | None = None, prompt: str = "Say hi.") -> Generated:
    """`/generate` as the page calls it: two slots, policy against reference (sampled unless
    `settings` say otherwise), streamed, timed from the call."""
    began, first, generated = time.perf_counter(), None, None
    job = client.submit(prompt=prompt, system="", k=2, mode="Side by side", model_a="policy",
                        model_b="reference", model_c="sft", model_d="policy", **(settings or SETTINGS), seed=seed,
                        beta=BETA, api_name="/generate")
    # Polled, not iterated: gradio_client's iterator spins on a lock every millisecond, which with
    # 100 voter threads would eat the machine the server runs on.
    while generated is None and not job.done():
        outputs = job.outputs()
        if first is None and outputs and any(outputs[-1][TEXTS]):
            first = time.perf_counter() - began
        if outputs and str(outputs[-1][STATUS]).startswith("Scoring"):
            generated = time.perf_counter() - began
        time.sleep(0.02)
    final = job.result(timeout=timeout)
    done = time.perf_counter() - began
    return Generated(first or done, generated or done, list(final[TEXTS]))  # or: it all came with the last update


def submit_vote(client: Any, outcome: str, voter: str, timeout: float) -> int | None:
    """`/vote` on the session's current round; the acknowledged vote id, or None if the reply has none."""
    reply = client.submit(outcome, [], voter, api_name="/vote").result(timeout=timeout)
    found = VOTE_ID.search(str(reply))
    return int(found.group(1)) if found else None


def connect(url: str) -> Any:  # -> gradio_client.Client
    """A client with its own session (so its own round), quiet and without telemetry."""
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False)


def yield_cpu() -> None:
    """Give this thread, and the threads it starts, a lower CPU priority (on Linux, where a nice
    value is per thread). N simulated clients share the server's machine: while 100 of them
    submitted at once they took 1.85 of 2 cores and left the server 0.16 (measured, 1 s windows),
    so the first seconds' latencies read the simulation, not the server. Real voters run elsewhere."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), VOTER_NICENESS)


def _one_voter(url: str, index: int, start: threading.Barrier, timeout: float,
               settings: dict[str, Any] | None, prompt: str) -> VoterResult:
    yield_cpu()
    result = VoterResult(voter_name(index), OUTCOMES[index % len(OUTCOMES)])
    client = None
    try:
        began = time.perf_counter()
        client = connect(url)
        result.connect_s = time.perf_counter() - began
    except Exception as exc:
        result.error = f"connect: {type(exc).__name__}: {exc}"
    # Every thread reaches the barrier, connected or not, so one failure does not stall the rest.
    start.wait(timeout)
    if client is None:
        return result
    try:
        began = time.perf_counter()
        answer = generate_round(client, index, timeout, settings, prompt)
        result.first_token_s, result.generated_s, result.texts = answer.first_token_s, answer.generated_s, answer.texts
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


def run_voters(url: str, n: int, timeout: float = 600.0, settings: list[dict[str, Any]] | None = None,
               on_start: Callable[[], None] | None = None, prompts: list[str] | None = None) -> LoadResult:
    """N voters, each in its own thread and session, all starting `/generate` at once (`on_start`
    is called then); voter i generates with `settings[i % len(settings)]` (default: `SETTINGS`) on
    `prompts[i % len(prompts)]` (default: "Say hi.")."""
    start = threading.Barrier(n + 1)
    results: list[VoterResult | None] = [None] * n
    prompts = prompts or ["Say hi."]

    def work(i: int) -> None:
        results[i] = _one_voter(url, i, start, timeout, settings[i % len(settings)] if settings else None,
                                prompts[i % len(prompts)])

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start.wait(timeout)  # released once every voter is connected
    began = time.perf_counter()
    if on_start is not None:
        on_start()
    for t in threads:
        t.join(timeout)
    seconds = time.perf_counter() - began
    voters = [r or VoterResult(voter_name(i), OUTCOMES[i % len(OUTCOMES)], error="voter thread did not finish")
              for i, r in enumerate(results)]
    return LoadResult(voters, seconds)


def check_votes(store: Any, result: LoadResult,  # store: playground.data.store.Store
                exclude: set[int] | None = None) -> VoteCheck:
    """Compare the database with what the voters were told: each acknowledged vote stored once,
    under its id, with its voter and outcome, and no vote that nobody was told about (votes whose
    id is in `exclude`, stored by an earlier run, aside)."""
    stored = [v for v in store.votes.list() if v.id not in (exclude or set())]
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


class Prober:
    """From `begin()` to the end of the block (run_voters begins it once every voter is connected
    and generation starts): the page loaded every second and a fresh `gradio_client` connection
    opened every 2 s (a newcomer's view of the server); a failure counts as the timeout it hit.

    The probes run in a process of their own, as a newcomer's browser does: in this process they
    would wait on the GIL behind the N voter threads' clients, and read the bench, not the server
    (measured with 100 tiny-model voters in one run: page/connect p95 2.3/3.9 s from here against
    0.3/0.9 s from another process)."""

    def __init__(self, url: str, timeout: float = 10) -> None:
        context = multiprocessing.get_context("spawn")  # nothing of this process's threads carried over
        self._begin, self._stop = context.Event(), context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=probe, args=(url, timeout, self._begin, self._stop, sender),
                                        daemon=True)
        self.page: list[float] = []
        self.connect: list[float] = []
        self.failures: list[str] = []

    def __enter__(self) -> "Prober":
        self._process.start()  # started early: its imports take a second
        return self

    def begin(self) -> None:
        self._begin.set()

    def __exit__(self, *exc: object) -> None:
        self._begin.set()
        self._stop.set()
        self.page, self.connect, self.failures = self._results.recv()
        self._process.join()


def probe(url: str, timeout: float, begin: Any, stop: Any, results: Any) -> None:  # Events, a Connection
    """The prober process: probe `url` from `begin` until `stop`, then send (page, connect, failures)."""
    begin.wait()
    page: list[float] = []
    connections: list[float] = []
    failures: list[str] = []

    def pages() -> None:
        while not stop.wait(1.0):
            took = page_seconds(url, timeout)
            page.append(timeout if took is None else took)
            if took is None:
                failures.append("page")

    def connects() -> None:
        while not stop.wait(2.0):
            began = time.perf_counter()
            try:
                connect(url).close()
                connections.append(time.perf_counter() - began)
            except Exception as exc:
                connections.append(timeout)
                failures.append(f"connect: {type(exc).__name__}")

    threads = [threading.Thread(target=pages), threading.Thread(target=connects)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.send((page, connections, failures))


@dataclass(frozen=True)
class Scenario:
    name: str
    model_dir: Path
    voters: int
    settings: list[dict[str, Any]]  # voter i's: settings[i % len(settings)]
    prompts: tuple[str, ...] = ("Say hi.",)  # voter i's: prompts[i % len(prompts)]
    flags: tuple[str, ...] = ()  # the app's own, beyond --sft (e.g. --policy CHECKPOINT)
    alone_first: bool = True  # one voter alone before all of them (the warm-up both modes get)


def scenario_row(scenario: Scenario, mode: str, result: LoadResult, check: VoteCheck, prober: Prober,
                 count_tokens: Any) -> dict[str, Any]:
    """One table row: latencies, throughput, responsiveness and the vote check of one run."""
    def values(attr: str) -> list[float]:
        return [getattr(v, attr) for v in result.voters if getattr(v, attr) is not None]

    tokens = sum(count_tokens(t) for v in result.voters for t in v.texts)
    return {
        "scenario": scenario.name, "mode": mode, "voters": scenario.voters,
        "connect_errors": sum(1 for v in result.voters if (v.error or "").startswith("connect")),
        "errors": len(result.errors),
        "first_token_p50_s": percentile(values("first_token_s"), 50),
        "first_token_p95_s": percentile(values("first_token_s"), 95),
        "generate_p50_s": percentile(values("generate_s"), 50),
        "generate_p95_s": percentile(values("generate_s"), 95),
        "vote_p95_s": percentile(values("vote_s"), 95),
        "generated_p95_s": percentile(values("generated_s"), 95),
        "tokens": tokens,
        "tokens_per_s": tokens / result.seconds,
        # generated tokens over the span to the last voter's end of generation (scoring excluded)
        "generation_tokens_per_s": tokens / max(values("generated_s"), default=float("nan")),
        "votes_per_s": len(result.acknowledged) / result.seconds,
        "page_p95_s": percentile(prober.page, 95),
        "connect_p95_s": percentile(prober.connect, 95),
        "probe_failures": len(prober.failures),
        "all_acknowledged_stored_once": check.ok,
    }


def run_scenario(scenario: Scenario, serial: bool, timeout: float, count_tokens: Any) -> list[dict[str, Any]]:
    """The scenario against a fresh app (serial or batched): one voter alone first (unless the
    scenario says not), then all voters at once; one row per run."""
    from playground.data.store import open_store

    mode = "serial" if serial else "batched"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with app_process(scenario.model_dir, home, (*scenario.flags, *(("--serial",) if serial else ()))) as url:
            runs = [(f"{mode}, 1 voter alone", 1)] if scenario.alone_first else []
            for label, n in [*runs, (mode, scenario.voters)]:
                with open_store(home / "votes.sqlite") as store:
                    before = {v.id for v in store.votes.list()}
                with Prober(url) as prober:
                    result = run_voters(url, n, timeout, scenario.settings, prober.begin, list(scenario.prompts))
                with open_store(home / "votes.sqlite") as store:
                    check = check_votes(store, result, exclude=before)
                rows.append(scenario_row(replace(scenario, voters=n), label, result, check, prober, count_tokens))
                if result.errors:
                    print(f"{scenario.name}/{label}: {len(result.errors)} errors, e.g. {result.errors[:3]}")
    return rows


def ratio(rows: list[dict[str, Any]], scenario: str, key: str) -> float:
    """batched ÷ serial of `key` in `scenario` (the all-voters runs)."""
    pick = {r["mode"]: r[key] for r in rows if r["scenario"] == scenario}
    return pick["batched"] / pick["serial"]


def team_prompts() -> tuple[str, ...]:
    """Distinct prompts of mixed length: the shipped eval and short-answer prompts, every other one
    behind a paragraph of context."""
    from playground.data.prompt_sets import load_prompt_file

    found: dict[str, None] = {}
    for name in ("eval-prompts.jsonl", "short-answers.jsonl"):
        for item in load_prompt_file(ROOT / "docs" / "examples" / name):
            found.setdefault(item.messages[-1]["content"], None)
    return tuple(f"{CONTEXT}\n\n{p}" if i % 2 else p for i, p in enumerate(found))


CONTEXT = ("Context: our team reviews answers written by two assistants and picks the better one. We care "
           "about answers that are correct, short and to the point, and that say so when they do not know. "
           "Long introductions, repeated questions and lists where a sentence would do are marked down.")


def trained_policy(folder: Path, model_dir: Path) -> Path:
    """A DPO checkpoint of `model_dir` trained by `playground train` on the shipped short answers (4
    steps): a policy with weights of its own, as a team serves one after its first training run."""
    out = folder / "runs"
    subprocess.run([sys.executable, "-m", "cli", "train", "--sft", str(model_dir), "--pairs",
                    str(ROOT / "docs" / "examples" / "short-answers.jsonl"), "--out", str(out), "--steps", "4"],
                   cwd=ROOT, check=True, capture_output=True)
    (checkpoint,) = out.iterdir()
    return checkpoint


SCENARIOS = ("tiny", "best", "team")


def scenarios(names: list[str], voters: int, real_voters: int, folder: Path) -> list[Scenario]:
    """The scenarios named (module docstring), their models built or trained in `folder`."""
    from playground.models.tiny import build_tiny_model

    out = []
    if "tiny" in names:
        out.append(Scenario("tiny", build_tiny_model(folder / "tiny-llama"), voters,
                            [{**SETTINGS, "max_new_tokens": 16}], alone_first=False))
    smol = packaged_model() if {"best", "team"} & set(names) else None
    real = {"top_p": 1.0, "top_k": 0, "max_new_tokens": 32, "repetition_penalty": 1.0}
    if smol and "best" in names:
        out.append(Scenario("best", smol, real_voters, [{**real, "temperature": 0.0}, {**real, "temperature": 0.7}]))
    if smol and "team" in names:
        out.append(Scenario("team", smol, real_voters,
                            [{**real, "max_new_tokens": n, "temperature": t}
                             for n, t in zip((16, 32, 48, 64), (0.0, 0.7, 0.0, 0.7), strict=True)],
                            team_prompts(), ("--policy", str(trained_policy(folder, smol)))))
    return out


def ratios(rows: list[dict[str, Any]], scenario: Scenario) -> dict[str, float]:
    """The scenario's batched ÷ serial figures (and, after a voter alone, all ÷ one alone)."""
    name = scenario.name
    keys = ("tokens_per_s", "generation_tokens_per_s", "generate_p95_s", "votes_per_s")
    out = {f"{name}_{key}_batched_over_serial": ratio(rows, name, key) for key in keys}
    if scenario.alone_first:
        alone = next(r for r in rows if r["scenario"] == name and r["mode"] == "batched, 1 voter alone")
        batched = next(r for r in rows if r["scenario"] == name and r["mode"] == "batched")
        out[f"{name}_tokens_per_s_all_over_one_alone"] = batched["tokens_per_s"] / alone["tokens_per_s"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voters", type=int, default=100, help="simulated voters on the tiny model, all at once")
    parser.add_argument("--real-voters", type=int, default=20, help="simulated voters on the packaged SmolLM2")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable; default: all of them)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one call may wait")
    args = parser.parse_args(argv)

    from playground.models.sources import quiet_libraries

    quiet_libraries()
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios(args.scenario or list(SCENARIOS), args.voters, args.real_voters, Path(tmp)):
            count_tokens = token_counter(scenario.model_dir)
            runs = [row for serial in (True, False) for row in run_scenario(scenario, serial, args.timeout,
                                                                             count_tokens)]
            rows += runs
            extra.update(ratios(runs, scenario))
    report("load", rows, extra, load_before)
    if not all(r["all_acknowledged_stored_once"] for r in rows):
        raise SystemExit(1)


def packaged_model() -> Path:
    """The packaged SmolLM2's converted folder in the shared cache (converted once)."""
    from playground.core.home import data_dir
    from playground.models.gguf_convert import ensure_default_model

    return ensure_default_model(data_dir() / "models")


def token_counter(model_dir: Path) -> Any:
    """len(tokens) of a response text, with the scenario model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])

