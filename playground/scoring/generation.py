"""Chat generation for k response slots: slots on the same base run as one batched `generate`.

With the default roles every slot is the one PeftModel, so SFT, reference and policy rows share a
batch through peft's mixed-adapter batches (`adapter_names`, `"__base__"` meaning no adapter).
Tokens stream back per step for the whole batch through a small `BaseStreamer` (transformers'
own streamers accept batch size 1 only).
"""

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_NEW_TOKENS
from playground.models.roles import Models, Role
from playground.scoring.encoding import Message

# How a response ended: by itself (an end-of-turn token was sampled), cut at max new tokens, or by Stop.
ENDED, CUT, STOPPED = "end of turn", "cut at max new tokens", "stopped"


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.9
    top_k: int = 50  # 0 disables top-k
    max_new_tokens: int = 128
    repetition_penalty: float = 1.0
    seed: int = 0

    def validate(self) -> "GenerationSettings":
        checks = [
            (0 <= self.temperature <= 5, "temperature must be between 0 and 5"),
            (0 < self.top_p <= 1, "top-p must be in (0, 1]"),
            (0 <= self.top_k <= 10_000, "top-k must be between 0 and 10000"),
            (1 <= self.max_new_tokens <= MAX_NEW_TOKENS, f"max new tokens must be 1..{MAX_NEW_TOKENS}"),
            (0.5 <= self.repetition_penalty <= 5, "repetition penalty must be between 0.5 and 5"),
            (0 <= self.seed < 2**63, "seed must be a non-negative integer"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise PlaygroundError("; ".join(problems))
        return self

    def sampling_bias(self) -> list[str]:
        """Why a response sampled with these settings is not a sample of the model's own
        distribution (so Σ log-ratio over it is no unbiased KL estimate); empty when it is."""
        if self.temperature == 0:
            reasons = ["greedy (T = 0)"]
        else:
            reasons = [f"T = {self.temperature:g}"] if self.temperature != 1 else []
            reasons += [f"top-p {self.top_p:g}"] if self.top_p < 1 else []
            reasons += [f"top-k {self.top_k}"] if self.top_k > 0 else []
        reasons += [f"repetition penalty {self.repetition_penalty:g}"] if self.repetition_penalty != 1 else []
        return reasons

    def generate_kwargs(self) -> dict:
        sampling = self.temperature > 0
        kwargs: dict = {"max_new_tokens": self.max_new_tokens, "do_sample": sampling,
                        "repetition_penalty": self.repetition_penalty}
        if sampling:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # silence the model's default sampling parameters under greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


@dataclass(frozen=True)
class Generation:
    """The state of k slots' generation: what `stream_generate` yields after every step."""

    prompt_ids: tuple[int, ...]  # the chat-templated prompt every slot continued
    texts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]  # each slot's sampled ids, its end-of-turn token included
    endings: tuple[str | None, ...]  # ENDED, CUT or STOPPED; None while the slot is still generating


class _BatchStreamer(BaseStreamer):
    """Receives each step's token column (B,) and forwards it; the first put is the prompt."""

    def __init__(self) -> None:
        self.steps: queue.Queue[torch.Tensor | None] = queue.Queue()
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.steps.put(value.reshape(-1).cpu())

    def end(self) -> None:
        self.steps.put(None)


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def prompt_ids(models: Models, messages: Sequence[Message]) -> torch.Tensor:
    out = models.tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    return out["input_ids"]  # (1, T)


def group_slots(slots: Sequence[Role]) -> list[list[int]]:
    """Slot indices grouped by the module they run on, in first-seen order."""
    groups: dict[int, list[int]] = {}
    for i, role in enumerate(slots):
        groups.setdefault(id(role.model), []).append(i)
    return list(groups.values())


def stream_generate(
    models: Models,
    slots: Sequence[Role],
    messages: Sequence[Message],
    settings: GenerationSettings,
    stop: threading.Event | None = None,
) -> Iterator[Generation]:
    """Yield every slot's text and sampled ids after every decoding step; the last yield is final
    and says how each slot ended.

    Each group of slots sharing a module is one batched `generate`, seeded with `settings.seed`.
    `stop` ends generation early (the texts so far are kept).
    """
    settings.validate()
    stop = stop or threading.Event()
    tokenizer = models.tokenizer
    end_ids = set(eos_ids(models))
    sampled: list[list[int]] = [[] for _ in slots]  # the end-of-turn token included
    endings: list[str | None] = [None] * len(slots)
    ids = prompt_ids(models, messages).to(models.device)
    prompt = tuple(ids[0].tolist())

    def state() -> Generation:
        texts = [tokenizer.decode(t[:-1] if e == ENDED else t, skip_special_tokens=True)
                 for t, e in zip(sampled, endings, strict=True)]
        return Generation(prompt, tuple(texts), tuple(map(tuple, sampled)), tuple(endings))

    for group in group_slots(slots):
        if stop.is_set():
            break
        model = slots[group[0]].model
        kwargs = settings.generate_kwargs()
        if isinstance(model, PeftModel):
            kwargs["adapter_names"] = [slots[i].adapter or "__base__" for i in group]
        streamer = _BatchStreamer()
        errors: list[BaseException] = []
        batch = ids.expand(len(group), -1)
        worker = threading.Thread(
            target=_run_generate, daemon=True,
            args=(models, model, batch, kwargs, settings.seed, streamer, stop, errors),
        )
        worker.start()
        while (column := streamer.steps.get()) is not None:
            for j, token in enumerate(column.tolist()):
                slot = group[j]
                if endings[slot] is None:  # after its end a row only receives padding
                    sampled[slot].append(token)
                    if token in end_ids:
                        endings[slot] = ENDED
            yield state()
        worker.join()
        if errors:
            raise PlaygroundError(f"generation failed: {type(errors[0]).__name__}: {errors[0]}")
        for slot in group:
            if endings[slot] is None:
                endings[slot] = CUT if len(sampled[slot]) >= settings.max_new_tokens else STOPPED
    endings[:] = [e or STOPPED for e in endings]  # slots whose group never started: Stop came first
    yield state()


def _run_generate(models: Models, model: torch.nn.Module, batch: torch.Tensor, kwargs: dict, seed: int,
                  streamer: _BatchStreamer, stop: threading.Event, errors: list[BaseException]) -> None:
    """Worker thread body: one batched `generate`; an exception is handed back through `errors`."""
    try:
        with models.lock, torch.inference_mode():
            torch.manual_seed(seed)
            model.generate(
                input_ids=batch, attention_mask=torch.ones_like(batch), pad_token_id=models.tokenizer.pad_token_id,
                streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]), **kwargs,
            )
    except BaseException as exc:  # re-raised in the caller's thread
        errors.append(exc)
        streamer.end()


def generate(models: Models, slots: Sequence[Role], messages: Sequence[Message],
             settings: GenerationSettings) -> list[str]:
    """The final texts of `stream_generate`."""
    *_, final = stream_generate(models, slots, messages, settings)
    return list(final.texts)


def eos_ids(models: Models) -> list[int]:
    """Token ids that end a response: the generation config's EOS (one or several) and the tokenizer's."""
    eos = models.policy.model.generation_config.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return [i for i in [*ids, models.tokenizer.eos_token_id] if i is not None]
