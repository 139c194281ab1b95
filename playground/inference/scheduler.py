"""One running batch for every generation in the process (continuous batching).

Every request that generates — a playground round, the queue's live generation, pre-generation, a
judge run — submits its sequences (rows) to one `Scheduler`. A worker thread runs the batch: new
rows join at token boundaries (their prompts are prefilled and their KV cache is concatenated to the
batch's, left-padded), finished rows leave (ended, cut at their max new tokens, or stopped), and
every step is one forward over all running rows of a module. Each row keeps

- its own adapter (peft's mixed-adapter batches: the policy, "__base__" for the SFT model and the
  reference, any attached checkpoint), pinned when it joins: a checkpoint served mid-batch is used
  by rows that join afterwards, while running rows finish on the weights they started with;
- its own sampling settings (temperature, top-p, top-k, repetition penalty, max new tokens);
- its own `torch.Generator` seeded from the request's seed and the row's slot, so a request's text
  for seed s is the same whether it ran alone or beside others.

Why not transformers' own continuous batching (`generate_batch` / `ContinuousBatchingManager`,
transformers 5.23): it has per-request temperature/top-k/top-p, but one global seed (no per-row
generator) and no per-row LoRA adapter (its paged forward does not pass peft's `adapter_names`), and
both are what this app's side-by-side rounds need. The loop here is small instead: a DynamicCache
per module, rows joined and dropped along the batch dimension.

The worker holds `models.lock` for one step at a time, so scoring, training's publish and the
scheduler interleave at token boundaries. Waiting rows are bounded (`SchedulerConfig.max_waiting`):
beyond it a submit is answered with `Busy` at once, and one session may hold at most
`per_session` rows.
"""

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from playground.core.errors import PlaygroundError
from playground.inference.settings import CUT, ENDED, STOPPED, GenerationSettings, eos_ids
from playground.models.roles import POLICY_ADAPTER, Models, Role

BASE = "__base__"  # peft's name, in a mixed-adapter batch, for a row with adapters off


class Busy(PlaygroundError):
    """The scheduler's queue is full, or the session already holds its share: try again shortly."""


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch: int = 64  # rows decoding at once, over all requests
    max_waiting: int = 256  # rows waiting to join; more is answered with Busy
    per_session: int = 8  # rows one session may have running or waiting
    serial: bool = False  # one request at a time: the baseline `evals.bench.load --serial` compares with

    def validate(self) -> "SchedulerConfig":
        checks = [
            (1 <= self.max_batch <= 4096, "max batch must be 1..4096 rows"),
            (0 <= self.max_waiting <= 100_000, "max waiting must be 0..100000 rows"),
            (1 <= self.per_session <= 4096, "per-session rows must be 1..4096"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise PlaygroundError("; ".join(problems))
        return self


def require_full_attention(role: Role) -> None:
    """Refuse a model whose KV cache keeps only some of the past positions on a layer (Mistral's and
    Gemma 2/3's sliding-window attention, chunked or recurrent layers): the loop joins and drops rows
    by padding, concatenating and cutting every layer's whole cache along the position axis, which
    such a layer's cache (a window that rolls) does not hold."""
    layers = DynamicCache(config=role.model.config).layers
    partial = [i for i, layer in enumerate(layers) if type(layer) is not DynamicLayer]
    if partial:
        kinds = sorted({type(layers[i]).__name__ for i in partial})
        raise PlaygroundError(
            f"{role.source}: {len(partial)} of its {len(layers)} layers keep a window of the past tokens "
            f"({', '.join(kinds)}: sliding-window or chunked attention, as in Mistral and Gemma 2/3); the generation "
            "scheduler joins rows by their whole KV cache and supports only models with full attention on every layer")


def row_seed(seed: int, slot: int) -> int:
    """Slot `slot`'s seed in a request seeded `seed`: distinct per slot (two slots on one model
    must not sample the same text) and the same whatever runs beside it."""
    return (seed * 1_000_003 + slot) % 2**63


@dataclass(eq=False)
class Row:
    """One sequence: its prompt, where it runs, how it samples, and what it has sampled so far."""

    request: "Request"
    slot: int
    prompt: list[int]
    module: torch.nn.Module
    adapter: str | None  # the pinned peft adapter (BASE for none); None when the module has no adapters
    weights: str  # the identity of the weights it generates with, recorded in the result
    settings: GenerationSettings
    generator: torch.Generator
    sampled: list[int] = field(default_factory=list)  # the end-of-turn token included
    ending: str | None = None


class Request:
    """A submission's handle: `wait()` for progress, `rows` for the state, `stop()` to end it early."""

    def __init__(self, session: str, stop: threading.Event) -> None:
        self.session = session
        self.stop_event = stop
        self.rows: list[Row] = []
        self.error: BaseException | None = None
        self._changed = threading.Condition()
        self._version = 0  # bumped by the worker after every step that touched a row of this request

    @property
    def done(self) -> bool:
        return self.error is not None or all(r.ending is not None for r in self.rows)

    def stop(self) -> None:
        self.stop_event.set()

    def notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def progress(self, interval: float = 0.0) -> Iterator[None]:
        """Yield after each step that changed this request, until every row has ended; raises the
        worker's error, if any. Steps that happen while the reader is busy, or within `interval`
        seconds of the last yield, are yielded once: a page refreshed 5 times a second reads as
        smoothly as one refreshed per token, at a fraction of the server's work."""
        seen, last = 0, 0.0
        while True:
            with self._changed:
                self._changed.wait_for(lambda v=seen: self._version != v)
                if not self.done and interval > 0:  # gather the steps of the rest of the interval
                    self._changed.wait_for(lambda: self.done, timeout=max(0.0, last + interval - time.monotonic()))
                seen, finished = self._version, self.done
            if self.error is not None:
                raise PlaygroundError(f"generation failed: {type(self.error).__name__}: {self.error}")
            last = time.monotonic()
            yield
            if finished:
                return


@dataclass(eq=False)
class _Batch:
    """The running rows of one module and their KV cache, left-padded to a common length."""

    module: torch.nn.Module
    rows: list[Row] = field(default_factory=list)
    cache: DynamicCache | None = None
    mask: torch.Tensor | None = None  # (B, L) bool: which cache positions are real tokens
    positions: torch.Tensor | None = None  # (B,) the next token's position id per row


class Scheduler:
    """The process's one generation loop over `models` (see the module docstring)."""

    def __init__(self, models: Models, cfg: SchedulerConfig | None = None) -> None:
        self.models = models
        self.cfg = (cfg or SchedulerConfig()).validate()
        modules: dict[int, Role] = {}
        for role in models.roles().values():  # each module once, under the first role that uses it
            modules.setdefault(id(role.model), role)
        for role in modules.values():
            require_full_attention(role)
        self.end_ids = set(eos_ids(models))
        self._lock = threading.Lock()  # guards _waiting, _active, _thread and _closed
        self._waiting: list[Request] = []
        self._batches: dict[int, _Batch] = {}  # by id(module); the worker's alone
        self._active: list[Request] = []  # requests in the batches, as of the last step (under _lock)
        self._thread: threading.Thread | None = None
        self._closed = False

    # ----- the caller's side -----

    def submit(self, slots: Sequence[Role], prompts: Sequence[Sequence[int]], settings: GenerationSettings,
               stop: threading.Event | None = None, session: str = "") -> Request:
        """Queue one row per slot (`prompts[i]` is slot i's prompt ids) and return at once.

        Raises `Busy` when the waiting rows or the session's share would pass their bound."""
        settings.validate()
        if len(slots) != len(prompts) or not slots:
            raise PlaygroundError(f"{len(slots)} slots for {len(prompts)} prompts")
        request = Request(session, stop or threading.Event())
        with self.models.lock:  # pin each row's adapter against a concurrent hot swap
            request.rows = [self._row(request, i, role, list(p), settings)
                            for i, (role, p) in enumerate(zip(slots, prompts, strict=True))]
        with self._lock:
            if self._closed:
                raise PlaygroundError("the generation scheduler is closed")
            waiting = sum(len(r.rows) for r in self._waiting)
            if waiting + len(request.rows) > self.cfg.max_waiting:
                raise Busy(f"busy: {waiting} sequences are waiting to generate; try again in a moment")
            mine = sum(len(r.rows) for r in [*self._waiting, *self._active] if r.session == session and not r.done)
            if session and mine + len(request.rows) > self.cfg.per_session:
                raise Busy(f"this session already has {mine} sequences generating (at most "
                           f"{self.cfg.per_session}); wait for them or press Stop")
            self._waiting.append(request)
            if self._thread is None:  # the worker runs while there is work, and ends when idle
                self._thread = threading.Thread(target=self._run, name="generation-scheduler", daemon=True)
                self._thread.start()
        return request

    def close(self) -> None:
        """Stop the worker after its current step; running and waiting requests end as stopped."""
        with self._lock:
            self._closed = True
            worker = self._thread
        if worker is not None:
            worker.join()

    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def running(self) -> int:
        """Rows decoding, as of the last step, over all modules."""
        with self._lock:
            return sum(1 for r in self._active for row in r.rows if row.ending is None)

    def _in_batches(self) -> dict[int, Request]:
        return {id(r.request): r.request for b in self._batches.values() for r in b.rows}

    def _row(self, request: Request, slot: int, role: Role, prompt: list[int], settings: GenerationSettings) -> Row:
        model = role.model
        adapter, weights = None, role.ident
        if isinstance(model, PeftModel):
            adapter = role.adapter or BASE
            if role.adapter == POLICY_ADAPTER:  # the served policy: pin the weights serving right now
                adapter, weights = self._served_adapter(), self.models.policy.ident
        generator = torch.Generator(device="cpu").manual_seed(row_seed(settings.seed, slot))
        return Row(request, slot, prompt, model, adapter, weights, settings, generator)

    def _served_adapter(self) -> str:
        """An adapter that holds the served policy's weights and that a hot swap does not change:
        none at all while the policy is a fresh adapter (LoRA B = 0: exactly the SFT model), an
        adapter with the same weights that never changes (the served checkpoint's own, the loaded
        `--policy` folder's copy: `Models.fixed_adapters`), else the served adapter itself (a run's
        checkpoint between its publish and its attaching)."""
        if self.models.policy_is_sft:
            return BASE
        return self.models.fixed_adapters.get(self.models.policy.ident, POLICY_ADAPTER)

    # ----- the worker's side -----

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    self._end_all(STOPPED)
                if self._closed or not (self._waiting or self._batches):
                    self._thread = None  # idle: the next submit starts a new worker
                    return
                joining = self._admit()
                self._active = [*self._in_batches().values(), *joining]
            touched = self._active
            try:
                with self.models.lock, torch.inference_mode():
                    self._step(joining)
            except BaseException as exc:  # every request in the batch learns it; the loop goes on
                for request in touched:
                    request.error = exc
                self._batches.clear()
            with self._lock:
                self._active = list(self._in_batches().values())
            for request in touched:
                request.notify()

    def _admit(self) -> list[Request]:
        """Waiting requests that join now: whole requests, in order, while the batch has room."""
        running = sum(len(b.rows) for b in self._batches.values())
        if self.cfg.serial and running:
            return []
        joining: list[Request] = []
        while self._waiting:
            request = self._waiting[0]
            if running and running + len(request.rows) > self.cfg.max_batch:
                break
            joining.append(self._waiting.pop(0))
            running += len(request.rows)
            if self.cfg.serial:
                break
        return joining

    def _end_all(self, ending: str) -> None:
        for request in [*self._waiting, *self._in_batches().values()]:
            for row in request.rows:
                row.ending = row.ending or ending
            request.notify()
        self._waiting.clear()
        self._batches.clear()

    def _step(self, joining: list[Request]) -> None:
        """One token for every running row, and the first token for every joining row."""
        for batch in list(self._batches.values()):
            self._drop(batch, [r for r in batch.rows if r.request.stop_event.is_set()], STOPPED)
            if batch.rows:
                self._decode(batch)
        new_rows = [row for request in joining for row in request.rows]
        for row in new_rows:
            if row.request.stop_event.is_set():
                row.ending = STOPPED
        by_module: dict[int, list[Row]] = {}
        for row in new_rows:
            if row.ending is None:
                by_module.setdefault(id(row.module), []).append(row)
        for key, rows in by_module.items():
            batch = self._batches.setdefault(key, _Batch(rows[0].module))
            for group in length_groups(rows):
                self._prefill(batch, group)
        for batch in list(self._batches.values()):
            self._drop(batch, [r for r in batch.rows if r.ending is not None], None)
            if not batch.rows:
                del self._batches[id(batch.module)]

    def _forward(self, module: torch.nn.Module, rows: list[Row], ids: torch.Tensor, mask: torch.Tensor,
                 positions: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        kwargs = {"adapter_names": [r.adapter for r in rows]} if isinstance(module, PeftModel) else {}
        out = module(input_ids=ids, attention_mask=mask.long(), position_ids=positions, past_key_values=cache,
                     use_cache=True, logits_to_keep=1, **kwargs)
        return out.logits[:, -1].float()  # (B, V)

    def _decode(self, batch: _Batch) -> None:
        assert batch.cache is not None and batch.mask is not None and batch.positions is not None
        device = self.models.device
        ids = torch.tensor([[r.sampled[-1]] for r in batch.rows], device=device)  # (B, 1)
        batch.mask = torch.cat([batch.mask, torch.ones(len(batch.rows), 1, dtype=torch.bool, device=device)], 1)
        logits = self._forward(batch.module, batch.rows, ids, batch.mask, batch.positions[:, None], batch.cache)
        batch.positions = batch.positions + 1
        self._sample(batch.rows, logits)

    def _prefill(self, batch: _Batch, rows: list[Row]) -> None:
        """Run the joining rows' prompts (left-padded among themselves), sample their first token,
        and append their cache to the batch's, left-padding whichever is shorter. Rows with the same
        prompt and adapter (k samples of one model, voters on one queued prompt) share one prompt
        forward; its cache and logits are gathered to each of them."""
        device, pad = self.models.device, self.models.tokenizer.pad_token_id or 0
        keys: dict[tuple[str | None, tuple[int, ...]], int] = {}
        which = [keys.setdefault((r.adapter, tuple(r.prompt)), len(keys)) for r in rows]
        distinct = [rows[which.index(i)] for i in range(len(keys))]
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((len(distinct), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros(len(distinct), width, dtype=torch.bool, device=device)
        for i, r in enumerate(distinct):
            ids[i, width - len(r.prompt):] = torch.tensor(r.prompt, device=device)
            mask[i, width - len(r.prompt):] = True
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)  # (D, P): RoPE positions skip the padding
        cache = DynamicCache(config=batch.module.config)
        logits = self._forward(batch.module, distinct, ids, mask, positions, cache)  # (D, V)
        if len(distinct) < len(rows):
            index = torch.tensor(which, device=device)
            cache.batch_select_indices(index)
            mask, logits = mask[index], logits[index]  # (J, P), (J, V)
        self._sample(rows, logits)
        lengths = torch.tensor([len(r.prompt) for r in rows], device=device)
        if batch.cache is None:
            batch.cache, batch.mask, batch.positions, batch.rows = cache, mask, lengths, list(rows)
            return
        assert batch.mask is not None and batch.positions is not None
        total = max(batch.mask.shape[1], width)
        for mine, theirs in zip(batch.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, total, 2), _left_pad(theirs.keys, total, 2)])
            mine.values = torch.cat([_left_pad(mine.values, total, 2), _left_pad(theirs.values, total, 2)])
        batch.mask = torch.cat([_left_pad(batch.mask, total, 1), _left_pad(mask, total, 1)])
        batch.positions = torch.cat([batch.positions, lengths])
        batch.rows.extend(rows)

    def _drop(self, batch: _Batch, leaving: list[Row], ending: str | None) -> None:
        """Remove `leaving` from the batch (setting `ending` on each, when given) and cut the
        leading cache columns that no remaining row uses."""
        if not leaving:
            return
        for row in leaving:
            row.ending = row.ending or ending
        gone = {id(r) for r in leaving}
        keep = [i for i, r in enumerate(batch.rows) if id(r) not in gone]
        batch.rows = [batch.rows[i] for i in keep]
        if not keep or batch.cache is None:
            batch.cache = batch.mask = batch.positions = None
            return
        assert batch.mask is not None and batch.positions is not None
        index = torch.tensor(keep, device=batch.mask.device)
        used = batch.mask[index].any(0)
        start = int(used.nonzero()[0, 0]) if bool(used.any()) else 0
        for layer in batch.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        batch.mask = batch.mask[index, start:]
        batch.positions = batch.positions[index]

    def _sample(self, rows: list[Row], logits: torch.Tensor) -> None:
        """Each row's next token from its own logits (B, V), settings and generator."""
        for row, scores in zip(rows, logits, strict=True):
            token = next_token(scores, row.prompt + row.sampled, row.settings, row.generator)
            row.sampled.append(token)
            if token in self.end_ids:
                row.ending = ENDED
            elif len(row.sampled) >= row.settings.max_new_tokens:
                row.ending = CUT


# What one more forward costs beyond its tokens, in prompt positions: reading every weight once more.
# On a 2-core CPU a prefill forward computed ~650 positions/s and cost ~0.1 s more than its
# positions (SmolLM2-135M, float32), so padding a group beyond ~64 positions costs more than a forward.
FORWARD_POSITIONS = 64


def length_groups(rows: list[Row]) -> list[list[Row]]:
    """`rows` (joining together) in groups of similar prompt length, each prefilled in one left-padded
    forward: the split that minimises the positions computed, padding included, plus
    `FORWARD_POSITIONS` per forward (prompts of 10 and 120 tokens in one forward would compute 120
    positions for each). Rows with one prompt stay together, so they still share their prefill."""
    order = sorted(rows, key=lambda r: (len(r.prompt), r.adapter or "", r.prompt))
    n = len(order)
    # best[i]: the cheapest cost of grouping order[:i]; a group order[j:i] costs its widest prompt × its rows.
    best, cut = [0] + [0] * n, [0] * (n + 1)
    for i in range(1, n + 1):
        best[i], cut[i] = min((best[j] + FORWARD_POSITIONS + len(order[i - 1].prompt) * (i - j), j)
                              for j in range(i))
    groups: list[list[Row]] = []
    while n:
        groups.insert(0, order[cut[n]:n])
        n = cut[n]
    return groups


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`t` padded with zeros (False for a mask) on the left of `dim` up to `length`."""
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim)


def next_token(scores: torch.Tensor, seen: Sequence[int], settings: GenerationSettings,
               generator: torch.Generator) -> int:
    """One token from one row's logits `scores` (V,), in transformers' order: repetition penalty on
    every id seen (prompt and sampled), then greedy, or temperature, top-k, top-p and a draw from
    the row's own generator. Top-k and top-p work on the candidates alone, best first (`topk` sorts
    the k best; only top-p without top-k sorts the vocabulary): the distribution of masking the
    others with −inf, without sorting and drawing over ~50k mostly −inf logits every token. Unlike
    transformers, a tie with the k-th logit does not keep more than k candidates."""
    if settings.repetition_penalty != 1:
        ids = torch.tensor(sorted(set(seen)), device=scores.device)
        picked, penalty = scores[ids], settings.repetition_penalty
        scores = scores.clone()
        scores[ids] = torch.where(picked < 0, picked * penalty, picked / penalty)
    if settings.temperature == 0:
        return int(scores.argmax())
    scores = scores / settings.temperature
    candidates: torch.Tensor | None = None  # the token id of each entry of `scores`, once cut or sorted
    if 0 < settings.top_k < scores.shape[0]:
        scores, candidates = torch.topk(scores, settings.top_k)  # (k,), best first
    if settings.top_p < 1:
        if candidates is None:
            scores, candidates = scores.sort(descending=True)
        probs = scores.softmax(-1)
        # drop a token when the tokens before it already reach top-p; the first always stays
        scores = scores.masked_fill(probs.cumsum(-1) - probs >= settings.top_p, float("-inf"))
    pick = int(torch.multinomial(scores.softmax(-1).cpu(), 1, generator=generator))
    return pick if candidates is None else int(candidates[pick])
