"""Turn (prompt, completion) into token ids exactly as TRL's DPOTrainer does.

- Conversational rows (lists of {role, content} messages): the prompt is rendered with the chat
  template and `add_generation_prompt=True`; the completion is the rest of the rendering of the
  whole conversation, so it includes the end-of-turn token(s) the template writes.
- Plain-text rows: the prompt tokenized as is; the completion is prompt+completion+EOS minus that.
- The completion starts where the prompt's ids and the full ids diverge (usually the prompt's end;
  earlier when tokens merge across the boundary). With several completions for one prompt, the
  earliest divergence point counts for all of them (TRL takes the minimum over chosen/rejected).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from playground.core.chat import Message, Text, is_conversational

if TYPE_CHECKING:  # importing transformers costs ~0.6 s; the CLIs that only read rows don't need it
    from transformers import PreTrainedTokenizerBase



@dataclass(frozen=True)
class Encoded:
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    truncated: bool = False

    @property
    def input_ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.completion_ids


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _chat_ids(tokenizer: "PreTrainedTokenizerBase", messages: list[Message], generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
    )
    return list(out["input_ids"])


def encode(
    tokenizer: "PreTrainedTokenizerBase",
    prompt: Text,
    completions: Sequence[Text],
    max_length: int | None = None,
) -> list[Encoded]:
    """Token ids for one prompt and each of its completions (TRL's convention, above).

    A row longer than `max_length` is truncated: the completion's end is cut first; if the prompt
    alone leaves fewer than a quarter of `max_length`, the prompt's start is cut too. `truncated`
    records that it happened so callers can count it.
    """
    if is_conversational(prompt):
        prompt_ids = _chat_ids(tokenizer, list(prompt), generation_prompt=True)
        fulls = [_chat_ids(tokenizer, list(prompt) + list(c), generation_prompt=False) for c in completions]
    else:
        eos = tokenizer.eos_token or ""
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        fulls = [
            list(tokenizer(prompt + (c if c.endswith(eos) else c + eos))["input_ids"]) for c in completions
        ]
    split = min(_common_prefix(prompt_ids, full) for full in fulls) if fulls else len(prompt_ids)
    head = tuple(prompt_ids[:split])
    return [truncate(head, tuple(full[split:]), max_length) for full in fulls]


def truncate(prompt: tuple[int, ...], completion: tuple[int, ...], max_length: int | None) -> Encoded:
    """`Encoded(prompt, completion)`, cut to `max_length` tokens as `encode` describes."""
    if max_length is None or len(prompt) + len(completion) <= max_length:
        return Encoded(prompt, completion)
    keep_prompt = min(len(prompt), max(max_length - len(completion), max_length // 4))
    prompt = prompt[len(prompt) - keep_prompt :] if keep_prompt else ()
    return Encoded(prompt, completion[: max_length - len(prompt)], truncated=True)
