"""Votes out, pairs and prompt sets in: what the Data tab's buttons and `playground data` call."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from playground.core.atomic import write_file, write_json
from playground.core.errors import PlaygroundError
from playground.data.merge import TIE_POLICIES, merge_votes
from playground.data.prompt_sets import (
    PromptSet,
    check_overlap,
    load_prompt_file,
    prompts_from_preference_file,
    set_name,
)
from playground.data.rows import RowError, load_pairs, load_unpaired, read_records, unpair
from playground.data.store import Store
from playground.data.style import arena_rows_with_style
from playground.data.votes import Binarize, to_trl_rows

EXPORT_FORMATS = ("trl", "arena", "unpaired")
OUT_SUFFIXES = (".jsonl", ".parquet")
MERGES = ("none", "majority")
META_SUFFIX = ".meta.json"
PARQUET_META_KEY = b"preference_playground"


@dataclass(frozen=True)
class ImportResult:
    imported: int
    skipped: list[RowError]  # only with skip_invalid: the rows left out, and why
    kind: str = "pairs"  # "pairs" (prompt, chosen, rejected) or "unpaired" (prompt, completion, label)


def meta_path(path: Path) -> Path:
    """Where an export's metadata goes: `<file>.meta.json` next to it."""
    return path.with_name(path.name + META_SUFFIX)


def export_rows(
    store: Store, fmt: str, path: Path, binarize: Binarize = "all_pairs", seed: int = 0,
    include_imported: bool = False, merge: str = "none", ties: str = "drop",
    flags: Mapping[int, Sequence[str]] | None = None,
) -> int:
    """Write the votes as `fmt` rows to a .jsonl or .parquet file, atomically; return the number of
    rows. "trl": preference pairs (prompt, chosen, rejected); "arena": Chatbot Arena battles;
    "unpaired": TRL's unpaired format (prompt, completion, label) that KTO reads: every pair's chosen
    (True) and rejected (False) answer, then both sides of each both-bad vote (False) and the single
    votes (👍 True, 👎 False). `include_imported` adds the imported rows (trl and unpaired only).

    `merge="majority"` first merges the voting queue's votes on each prompt into one
    (`playground.data.merge.merge_votes`; `ties` "drop" or "keep" says what becomes of prompts with no
    majority) and records the rule in `<file>.meta.json`, and in a Parquet file's schema metadata.
    `flags` ({vote id: why the cleaning rules flag it}) adds a `flags` list to every row (empty:
    kept; imported rows have none).
    """
    if merge not in MERGES or ties not in TIE_POLICIES:
        raise PlaygroundError(f"merge {merge!r} / ties {ties!r}: expected merge one of {', '.join(MERGES)} and "
                              f"ties one of {', '.join(TIE_POLICIES)}")
    votes, metadata = store.votes.list(), None
    if merge == "majority":
        merged = merge_votes(votes, "keep" if ties == "keep" else "drop")
        votes = merged.votes
        metadata = {"format": fmt, "binarize": binarize, "include_imported": include_imported, **merged.metadata}
    if fmt == "trl":
        if include_imported and metadata is None:  # as before merging existed: the pairs DPO trains on
            rows = [row.as_trl() for row in store.training_pairs(binarize, seed)]
        else:
            rows = to_trl_rows(votes, binarize, seed)
            rows += [row.as_trl() for row in store.imports.pairs()] if include_imported else []
    elif fmt == "unpaired":
        pairs = store.training_pairs(binarize, seed, votes, include_imported)
        unpaired = unpair(pairs) + store.unpaired_rows(votes, include_imported)
        rows = [row.as_trl() for row in unpaired]
    elif fmt == "arena":
        if include_imported:
            raise PlaygroundError("imported pairs name no models, so they can only be exported in trl format")
        rows = arena_rows_with_style(votes)
    else:
        raise PlaygroundError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    if len({isinstance(row["prompt"], str) for row in rows if fmt != "arena"}) > 1:
        raise PlaygroundError(
            "these rows mix plain-text and chat-message prompts (the imported rows differ from the "
            "votes or from each other), but a TRL dataset holds one kind; export without the imported rows"
        )
    if not rows:
        raise PlaygroundError("nothing to export: no votes"
                              + {"trl": " that prefer one response", "unpaired": " that judge a response"}.get(fmt, ""))
    if flags is not None:
        rows = [{**row, "flags": list(flags.get(row.get("vote_id"), ()))} for row in rows]
    write_rows(rows, path, metadata)
    if metadata is None:
        meta_path(path).unlink(missing_ok=True)  # a merged export's old metadata would describe other rows
    else:
        write_json(meta_path(path), {**metadata, "rows": len(rows)})
    return len(rows)


def write_rows(rows: list[dict[str, Any]], path: Path, metadata: dict[str, Any] | None = None) -> None:
    """JSON lines or Parquet by the file's suffix, written next to `path` and renamed over it, so
    a reader never sees half a file and a failed export leaves the old one. `metadata` goes into a
    Parquet file's schema metadata (key `preference_playground`, JSON); JSON lines have no place for it."""
    suffix = path.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise PlaygroundError(f"{path}: the output must end in {' or '.join(OUT_SUFFIXES)}, to say which format")
    if not path.parent.is_dir():
        raise PlaygroundError(f"{path.parent}: no such folder")
    table = _arrow_table(rows) if suffix == ".parquet" else None  # fail before creating anything
    if table is not None and metadata is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               PARQUET_META_KEY: json.dumps(metadata).encode()})

    def write(f: BinaryIO) -> None:
        if table is None:
            f.writelines(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, f)

    write_file(path, write)


def _arrow_table(rows: list[dict[str, Any]]) -> Any:  # -> pyarrow.Table (imported lazily)
    import pyarrow as pa

    # Columns from every row, not just the first (imported pairs may carry other fields), and each
    # typed from all its values: message lists become lists of structs, which datasets and TRL read.
    columns = list(dict.fromkeys(key for row in rows for key in row))
    try:
        return pa.table({c: pa.array([row.get(c) for row in rows]) for c in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PlaygroundError(f"these rows do not fit one Parquet schema ({exc}); export to .jsonl instead") from None


def import_file(store: Store, path: Path, skip_invalid: bool = False) -> ImportResult:
    """Validate every row of a TRL preference file (prompt, chosen, rejected) or unpaired file
    (prompt, completion, label: KTO's), then import them all in one transaction. The kind is read
    from the first row's keys. Any invalid row fails the whole file (a `PlaygroundError` listing the
    lines), unless `skip_invalid`."""
    kind = file_kind(path)
    loaded = load_unpaired(path, skip_invalid=skip_invalid) if kind == "unpaired" else load_pairs(
        path, skip_invalid=skip_invalid)
    if not loaded.rows:
        raise PlaygroundError(f"{path}: no valid rows to import ({len(loaded.skipped)} invalid)")
    add = store.imports.add_unpaired if kind == "unpaired" else store.imports.add_pairs
    return ImportResult(add(loaded.rows, path.name), loaded.skipped, kind)  # type: ignore[arg-type]


def file_kind(path: Path) -> str:
    """"unpaired" when the first readable row has `completion` and `label` and no `chosen`, else "pairs"."""
    for _, record in read_records(path):
        if isinstance(record, dict):
            return "unpaired" if {"completion", "label"} <= record.keys() and "chosen" not in record else "pairs"
    return "pairs"


def import_prompts(store: Store, path: Path, name: str, overlap: int = 1, from_preferences: bool = False,
                   source: str | None = None) -> PromptSet:
    """Read a prompt-set file (or the distinct prompts of a TRL preference file), check every row,
    then store them all as the new set `name`; any bad row imports nothing. `source` names the file
    as people know it (an upload's temporary name means nothing)."""
    name, overlap = set_name(name), check_overlap(overlap)
    prompts = prompts_from_preference_file(path) if from_preferences else load_prompt_file(path)
    return store.prompt_sets.add(name, source or path.name, prompts, overlap)
