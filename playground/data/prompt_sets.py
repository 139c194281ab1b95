"""Prompt sets: the prompts a voting queue serves, read from a file and checked line by line.

A prompt-set file has one row per prompt (JSONL, CSV or Parquet, read by `rows.read_records`):
`prompt` is a string (one user message) or a list of chat messages ending with the user's turn;
`id` (optional) names the prompt, unique within the file, and defaults to the row's line number;
`category` (optional) is any short label. Every row is checked before anything is stored and
all problems are reported together with their line numbers: a set is imported whole or not at all.

The types here are what the store hands back for the voting queue and pre-generation. This module
imports nothing heavy, so the store and the data CLI stay fast to start.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.core.chat import Message, Text
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_PROMPT_CHARS, MAX_PROMPTS, MAX_RESPONSES, MIN_RESPONSES
from playground.data.rows import RowError, check_messages, load_pairs, read_records

MAX_NAME_LEN = 64
MAX_REF_LEN = 200
MAX_CATEGORY_LEN = 200
MAX_OVERLAP = 100
MAX_GUIDELINES_CHARS = 20_000
MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class SetPrompt:
    ref: str  # the file's `id`, else the row's line number
    messages: list[Message]  # ends with the user turn the models answer
    category: str | None = None
    id: int | None = None  # set once stored
    position: int | None = None  # order in the imported file, 0-based; set once stored


@dataclass(frozen=True)
class PromptSet:
    id: int
    name: str
    source: str  # the imported file's name
    overlap: int  # votes a prompt needs to leave the queue
    guidelines: str  # Markdown shown above the queue
    models: tuple[str, ...]  # the models whose responses the queue shows (k = their number); () until chosen
    generation: dict[str, Any]  # GenerationSettings fields for pre-generation and live generation
    created_at: float

    @property
    def k(self) -> int:
        return len(self.models)


@dataclass(frozen=True)
class SetResponse:
    prompt_id: int
    model: str
    text: str
    scores: dict[str, float]
    settings: dict[str, Any]  # the generation settings, seed and batch included
    # The generating model as rated (`votes.Response.rated_as`): "policy" is the checkpoint that
    # served when this was generated. None for responses stored before it was recorded.
    rated_as: str | None = None


def set_name(name: Any) -> str:
    """A prompt set's name as stored: stripped, non-empty, short and printable."""
    if not isinstance(name, str) or not name.strip():
        raise PlaygroundError("the prompt set needs a name")
    name = name.strip()
    if len(name) > MAX_NAME_LEN or not name.isprintable():
        raise PlaygroundError(f"prompt set name {name[:80]!r}: at most {MAX_NAME_LEN} printable characters")
    return name


def check_overlap(overlap: Any) -> int:
    """Votes a prompt needs before it leaves the queue: a whole number 1..MAX_OVERLAP."""
    if isinstance(overlap, float) and overlap.is_integer():
        overlap = int(overlap)
    if type(overlap) is not int or not 1 <= overlap <= MAX_OVERLAP:
        raise PlaygroundError(f"overlap {overlap!r}: expected a whole number of votes per prompt, 1 to {MAX_OVERLAP}")
    return overlap


def check_guidelines(text: Any) -> str:
    if not isinstance(text, str):
        raise PlaygroundError("the guidelines must be text (Markdown)")
    if len(text) > MAX_GUIDELINES_CHARS:
        raise PlaygroundError(f"the guidelines are {len(text)} characters; at most {MAX_GUIDELINES_CHARS} allowed")
    return text


def check_models(models: Iterable[str], available: Iterable[str]) -> tuple[str, ...]:
    """The models a set's queue compares: 2..4 distinct names the app can generate with."""
    names = tuple(models)
    known = set(available)
    if not MIN_RESPONSES <= len(names) <= MAX_RESPONSES:
        raise PlaygroundError(f"choose {MIN_RESPONSES} to {MAX_RESPONSES} models to compare, got {len(names)}")
    if len(set(names)) != len(names):
        raise PlaygroundError(f"models {', '.join(names)}: each model once")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PlaygroundError(f"unknown model(s) {', '.join(map(repr, unknown))}; "
                              f"available: {', '.join(sorted(known))}")
    return names


def prompt_messages(prompt: Text, line: int) -> list[Message]:
    """A prompt (a string, or chat messages) as the chat sent to the models; `RowError` if unusable."""

    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = check_messages(prompt, "prompt", line)
    if messages[-1]["role"] != "user":
        raise RowError(line, f"the prompt must end with a user message for the models to answer, not "
                             f"{messages[-1]['role']!r}")
    if not messages[-1]["content"].strip():
        raise RowError(line, "'prompt' is empty")
    chars = sum(len(m["content"]) for m in messages)
    if chars > MAX_PROMPT_CHARS:
        raise RowError(line, f"the prompt is {chars} characters; at most {MAX_PROMPT_CHARS} allowed")
    return messages


def _ref(value: Any, line: int) -> str:
    if value is None or value == "":
        return str(line)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RowError(line, f"'id' must be a string or a whole number, got {type(value).__name__}")
    ref = str(value).strip()
    if not ref or len(ref) > MAX_REF_LEN or not ref.isprintable():
        raise RowError(line, f"'id' {ref[:80]!r}: 1 to {MAX_REF_LEN} printable characters")
    return ref


def _category(value: Any, line: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_CATEGORY_LEN:
        raise RowError(line, f"'category' must be a string of at most {MAX_CATEGORY_LEN} characters")
    return value.strip() or None


def parse_prompt(record: Any, line: int) -> SetPrompt:
    """One row of a prompt-set file, or `RowError` saying what is wrong with it."""
    if not isinstance(record, dict):
        raise RowError(line, f"expected a JSON object, got {type(record).__name__}")
    if record.get("prompt") is None:
        raise RowError(line, "missing 'prompt'")
    return SetPrompt(_ref(record.get("id"), line), prompt_messages(record["prompt"], line),
                     _category(record.get("category"), line))


def _checked(path: Path, prompts: list[SetPrompt], errors: list[RowError]) -> list[SetPrompt]:
    """All or nothing: the prompts, or one error listing every bad line."""
    if errors:
        shown = "\n  ".join(str(e) for e in errors[:MAX_ERRORS_SHOWN])
        more = f"\n  … and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise PlaygroundError(f"{path}: {len(errors)} invalid row(s), nothing was imported:\n  {shown}{more}")
    if not prompts:
        raise PlaygroundError(f"{path}: no prompts")
    if len(prompts) > MAX_PROMPTS:
        raise PlaygroundError(f"{path}: {len(prompts)} prompts; at most {MAX_PROMPTS} in one set (split the file)")
    return prompts


def load_prompt_file(path: Path) -> list[SetPrompt]:
    """Read and check every row of a prompt-set file (see the module docstring)."""
    prompts: list[SetPrompt] = []
    errors: list[RowError] = []
    first_line: dict[str, int] = {}
    for line, record in read_records(path):
        try:
            if isinstance(record, RowError):
                raise record
            prompt = parse_prompt(record, line)
            if prompt.ref in first_line:
                raise RowError(line, f"id {prompt.ref!r} is already used on line {first_line[prompt.ref]}")
            first_line[prompt.ref] = line
            prompts.append(prompt)
        except RowError as exc:
            errors.append(exc)
        if len(prompts) > MAX_PROMPTS:
            break  # no need to read (or hold) the rest of a file that is refused anyway
    return _checked(path, prompts, errors)


def prompts_from_preference_file(path: Path) -> list[SetPrompt]:
    """The distinct prompts of a TRL preference file, in first-seen order (ref: that line's number).

    The file is validated as `import` does (all or nothing); a string prompt becomes one user
    message, and a row's `category`, if it has one, is kept.
    """
    loaded = load_pairs(path)
    prompts: list[SetPrompt] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    for row, line in zip(loaded.rows, loaded.lines, strict=True):
        try:
            messages = prompt_messages(row.prompt, line)
            key = json.dumps(messages, sort_keys=True)
            if key not in seen:
                seen.add(key)
                prompts.append(SetPrompt(str(line), messages, _category(row.extra.get("category"), line)))
        except RowError as exc:
            errors.append(exc)
    return _checked(path, prompts, errors)
