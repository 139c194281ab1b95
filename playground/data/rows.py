"""Preference rows as TRL reads them, read from JSONL/Parquet/CSV and validated line by line.

A row is `{"prompt", "chosen", "rejected"}`: three strings (standard), or a message list for the
prompt and message lists for the completions (conversational). Implicit-prompt rows hold whole
conversations in `chosen`/`rejected` and no `prompt`; the prompt is their common leading messages.
An unpaired row (TRL's unpaired preference format, what KTO reads) is `{"prompt", "completion",
"label"}`, the same two shapes, `label` true for a desirable completion and false for an undesirable one.
"""

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from playground.core.chat import Text
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_FILE_BYTES

ROLES = ("system", "user", "assistant", "tool")
FORMATS = (".jsonl", ".json", ".parquet", ".csv")


class RowError(PlaygroundError):
    """A bad row, with the 1-based line (JSONL, CSV data row) or row number (Parquet)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class PreferenceRow:
    prompt: Text
    chosen: Text
    rejected: Text
    extra: dict[str, Any] = field(default_factory=dict)  # every other input field, kept as given

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)

    def as_trl(self) -> dict[str, Any]:
        return {**self.extra, "prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


@dataclass(frozen=True)
class UnpairedRow:
    """One completion judged on its own (TRL's unpaired preference format, read by KTO):
    `label` True = desirable (a chosen answer, a 👍), False = undesirable (a rejected answer,
    either side of *Both bad*, a 👎)."""

    prompt: Text
    completion: Text
    label: bool
    extra: dict[str, Any] = field(default_factory=dict)  # every other input field, kept as given

    def as_trl(self) -> dict[str, Any]:
        return {**self.extra, "prompt": self.prompt, "completion": self.completion, "label": self.label}


def unpair(pairs: Sequence[PreferenceRow]) -> list[UnpairedRow]:
    """Each pair as two unpaired rows, its chosen answer desirable and its rejected one undesirable
    (TRL's `unpair_preference_dataset`, pair by pair); the pair's other fields go with both."""
    return [UnpairedRow(p.prompt, completion, label, dict(p.extra))
            for p in pairs for completion, label in ((p.chosen, True), (p.rejected, False))]


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) for each row of a JSONL, Parquet or CSV file. A JSONL line that
    is not JSON comes as a `RowError` in the record's place, so a caller can go on past it."""
    if not path.is_file():
        raise PlaygroundError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PlaygroundError(f"{path}: {size / 2**20:.0f} MiB; files of at most {MAX_FILE_BYTES // 2**20} MiB "
                              "are read (split it, or raise MAX_FILE_BYTES in playground/limits.py)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8", errors="strict") as f:
            try:
                for line_no, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        record = RowError(line_no, f"not valid JSON ({exc.msg} at column {exc.colno})")
                    except (ValueError, RecursionError) as exc:  # valid JSON that Python will not parse
                        record = RowError(line_no, f"not readable JSON ({_unreadable(exc)})")
                    yield line_no, record
            except UnicodeDecodeError:
                raise PlaygroundError(f"{path}: not UTF-8 text") from None
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise PlaygroundError(f"{path}: not a readable Parquet file ({exc})") from None
        for i, rec in enumerate(table.to_pylist(), start=1):
            yield i, rec
    elif suffix == ".csv":
        import csv

        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            # Line numbers count the header as line 1, as an editor shows them.
            try:
                for rec in reader:
                    yield reader.line_num, {k: _maybe_json(v) for k, v in rec.items() if k is not None}
            except UnicodeDecodeError:
                raise PlaygroundError(f"{path}: not UTF-8 text") from None
            except csv.Error as exc:  # a cell over csv's field size limit (128 KiB), a stray NUL, …
                raise PlaygroundError(f"{path}: not readable as CSV ({exc})") from None
    else:
        raise PlaygroundError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(FORMATS)}")


def _maybe_json(value: str | None) -> Any:
    """CSV cells holding message lists are JSON text."""
    if value is not None and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # not JSON after all (or unreadable JSON): keep the text
            return value
    return value


def _unreadable(exc: ValueError | RecursionError) -> str:
    """Why json.loads refused text that is JSON: Python caps integer literals at 4300 digits and
    nesting at its recursion limit (both raise something other than JSONDecodeError)."""
    return "nested too deeply" if isinstance(exc, RecursionError) else "a number with too many digits"


def check_messages(value: Any, name: str, line: int) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(line, f"{name} must be a non-empty list of {{role, content}} messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RowError(line, f"{name}[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise RowError(line, f"{name}[{i}] has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _split_implicit(chosen: list, rejected: list, line: int) -> tuple[list, list, list]:
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise RowError(line, "no 'prompt', and chosen/rejected share no leading messages to take it from")
    return chosen[:n], chosen[n:], rejected[n:]


def parse_row(record: Any, line: int) -> PreferenceRow:
    """Validate one record into a `PreferenceRow`, or raise `RowError` saying what is wrong."""
    if not isinstance(record, dict):
        raise RowError(line, f"expected a JSON object, got {type(record).__name__}")
    for key in ("chosen", "rejected"):
        if key not in record or record[key] is None:
            raise RowError(line, f"missing {key!r}")
    prompt, chosen, rejected = record.get("prompt"), record["chosen"], record["rejected"]
    extra = {k: v for k, v in record.items() if k not in ("prompt", "chosen", "rejected")}
    if prompt is None:
        chosen = check_messages(chosen, "chosen", line)
        rejected = check_messages(rejected, "rejected", line)
        prompt, chosen, rejected = _split_implicit(chosen, rejected, line)
    elif isinstance(prompt, str):
        for key, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str):
                raise RowError(line, f"prompt is a string, so {key!r} must be a string too, got {type(value).__name__}")
    else:
        prompt = check_messages(prompt, "prompt", line)
        chosen = check_messages(chosen, "chosen", line)
        rejected = check_messages(rejected, "rejected", line)
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        text = value if isinstance(value, str) else "".join(m["content"] for m in value)
        if not text.strip():
            raise RowError(line, f"{key!r} is empty")
    if isinstance(prompt, str) and not prompt.strip():
        raise RowError(line, "'prompt' is empty")
    for key, value in record.items():
        _check_unicode(key, value, line)
    return PreferenceRow(prompt, chosen, rejected, extra)


def parse_unpaired_row(record: Any, line: int) -> UnpairedRow:
    """Validate one record into an `UnpairedRow`, or raise `RowError` saying what is wrong. A CSV
    cell holds the label as text: true/false (any case) is read as the boolean."""
    if not isinstance(record, dict):
        raise RowError(line, f"expected a JSON object, got {type(record).__name__}")
    for key in ("prompt", "completion", "label"):
        if key not in record or record[key] is None:
            raise RowError(line, f"missing {key!r}")
    prompt, completion, label = record["prompt"], record["completion"], record["label"]
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):
        label = label.strip().lower() == "true"
    if not isinstance(label, bool):
        raise RowError(line, f"'label' must be true (desirable) or false (undesirable), got {label!r}")
    if isinstance(prompt, str):
        if not isinstance(completion, str):
            raise RowError(line, f"prompt is a string, so 'completion' must be a string too, "
                                 f"got {type(completion).__name__}")
        if not prompt.strip():
            raise RowError(line, "'prompt' is empty")
    else:
        prompt = check_messages(prompt, "prompt", line)
        completion = check_messages(completion, "completion", line)
    text = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
    if not text.strip():
        raise RowError(line, "'completion' is empty")
    for key, value in record.items():
        _check_unicode(key, value, line)
    extra = {k: v for k, v in record.items() if k not in ("prompt", "completion", "label")}
    return UnpairedRow(prompt, completion, label, extra)


def _check_unicode(key: str, value: Any, line: int) -> None:
    """JSON's \\udXXX escapes can spell a lone surrogate: half a character, which Python strings hold
    but no UTF-8 file (an export) and no tokenizer (training) accepts. Refused here, at the door."""
    try:
        json.dumps({key: value}, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(line, f"{key!r} holds a lone surrogate (a \\udXXX escape that is half a character), "
                             "which is not text") from None
    except RecursionError:
        raise RowError(line, f"{key!r} is nested too deeply") from None


Row = TypeVar("Row", PreferenceRow, UnpairedRow)


@dataclass(frozen=True)
class Loaded(Generic[Row]):
    rows: list[Row]
    lines: list[int]  # source line of each row
    skipped: list[RowError]


LoadedPairs = Loaded[PreferenceRow]


def load_pairs(path: Path, skip_invalid: bool = False, max_errors: int = 20) -> LoadedPairs:
    """Read and validate every preference row. Without `skip_invalid`, any bad row fails the whole
    file with up to `max_errors` line-numbered problems listed (all or nothing)."""
    return _load(path, parse_row, skip_invalid, max_errors)


def holds_unpaired(path: Path) -> bool:
    """Whether the file's first readable row is an unpaired one (completion and label, no chosen):
    how TRL's KTOTrainer tells the two formats apart."""
    for _, record in read_records(path):
        if isinstance(record, dict):
            return "completion" in record and "label" in record and "chosen" not in record
    return False


def load_unpaired(path: Path, skip_invalid: bool = False, max_errors: int = 20) -> Loaded[UnpairedRow]:
    """Read and validate every unpaired row (prompt, completion, label), as `load_pairs` does."""
    return _load(path, parse_unpaired_row, skip_invalid, max_errors)


def _load(path: Path, parse: Callable[[Any, int], Row], skip_invalid: bool, max_errors: int) -> Loaded[Row]:
    rows: list[Row] = []
    lines: list[int] = []
    errors: list[RowError] = []
    for line, record in read_records(path):
        try:
            if isinstance(record, RowError):
                raise record
            rows.append(parse(record, line))
            lines.append(line)
        except RowError as exc:
            errors.append(exc)
    if errors and not skip_invalid:
        shown = "\n  ".join(str(e) for e in errors[:max_errors])
        more = f"\n  … and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise PlaygroundError(f"{path}: {len(errors)} invalid row(s), nothing was read:\n  {shown}{more}")
    if not rows and not errors:
        raise PlaygroundError(f"{path}: no rows")
    return Loaded(rows, lines, errors)
