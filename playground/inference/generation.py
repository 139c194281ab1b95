"""Chat generation for k response slots: its streamed state, and `stream_generate`, which runs the
slots as rows of the process's one continuous batch (`scheduler.Scheduler`).

With the default roles every slot is the one PeftModel, so SFT, reference and policy rows share a
batch through peft's mixed-adapter batches (`adapter_names`, `"__base__"` meaning no adapter).
"""

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from playground.core.chat import Message
from playground.inference.scheduler import Scheduler
from playground.inference.settings import ENDED, GenerationSettings, prompt_ids
from playground.models.roles import Role


@dataclass(frozen=True)
class Generation:
    """The state of k slots' generation: what `stream_generate` yields after every step."""

    prompt_ids: tuple[int, ...]  # the chat-templated prompt every slot continued
    texts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]  # each slot's sampled ids, its end-of-turn token included
    endings: tuple[str | None, ...]  # ENDED, CUT or STOPPED; None while the slot is still generating
    weights: tuple[str, ...]  # the identity of the weights each slot generated with (pinned when it joined)


def stream_generate(
    scheduler: Scheduler,
    slots: Sequence[Role],
    messages: Sequence[Message],
    settings: GenerationSettings,
    stop: threading.Event | None = None,
    session: str = "",
    interval: float = 0.0,
) -> Iterator[Generation]:
    """Yield every slot's text and sampled ids as generation goes on (after each step, or once for
    several steps if the reader was slower); the last yield is final and says how each slot ended.

    The slots are rows of the scheduler's shared batch (each its own adapter and seed: see
    `scheduler.row_seed`); `stop` ends them early (the texts so far are kept); `session` is whose
    share of the scheduler they count against; `interval` the least seconds between two yields
    but the last."""
    models = scheduler.models
    ids = tuple(prompt_ids(models, messages)[0].tolist())
    request = scheduler.submit(slots, [ids] * len(slots), settings, stop, session)

    def state() -> Generation:
        rows = [(list(r.sampled), r.ending) for r in request.rows]  # one consistent copy per yield
        texts = [models.tokenizer.decode(t[:-1] if e == ENDED else t, skip_special_tokens=True) for t, e in rows]
        return Generation(ids, tuple(texts), tuple(tuple(t) for t, _ in rows), tuple(e for _, e in rows),
                          tuple(r.weights for r in request.rows))

    try:
        for _ in request.progress(interval):
            yield state()
    finally:  # a reader that leaves early (a closed page) frees its rows at the next step
        request.stop()


def generate(scheduler: Scheduler, slots: Sequence[Role], messages: Sequence[Message],
             settings: GenerationSettings) -> list[str]:
    """The final texts of `stream_generate`."""
    *_, final = stream_generate(scheduler, slots, messages, settings)
    return list(final.texts)
