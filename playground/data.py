"""`python -m playground.data`: export the votes as preference data; import preference pairs.

`export_rows` and `import_file` are what the UI's export and import buttons call too.
"""

import argparse
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.cli import run_cli
from playground.errors import PlaygroundError
from playground.rows import FORMATS as IMPORT_FORMATS
from playground.rows import RowError, load_pairs
from playground.store import DB_NAME, Store, default_path
from playground.votes import Binarize, to_arena_rows, to_trl_rows

EXPORT_FORMATS = ("trl", "arena")
OUT_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class ImportResult:
    imported: int
    skipped: list[RowError]  # only with skip_invalid: the rows left out, and why


def export_rows(
    store: Store, fmt: str, path: Path, binarize: Binarize = "all_pairs", seed: int = 0,
    include_imported: bool = False,
) -> int:
    """Write the votes as `fmt` ("trl" or "arena") rows to a .jsonl or .parquet file, atomically;
    return the number of rows. `include_imported` adds the imported pairs (trl only)."""
    if fmt == "trl":
        if include_imported:
            rows = [row.as_trl() for row in store.training_pairs(binarize, seed)]
        else:
            rows = to_trl_rows(store.votes(), binarize, seed)
        if len({isinstance(row["prompt"], str) for row in rows}) > 1:
            raise PlaygroundError(
                "these pairs mix plain-text and chat-message prompts (the imported pairs differ from the "
                "votes or from each other), but a TRL dataset holds one kind; export without the imported pairs"
            )
    elif fmt == "arena":
        if include_imported:
            raise PlaygroundError("imported pairs name no models, so they can only be exported in trl format")
        rows = to_arena_rows(store.votes())
    else:
        raise PlaygroundError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    if not rows:
        raise PlaygroundError("nothing to export: no votes" + (" that prefer one response" if fmt == "trl" else ""))
    write_rows(rows, path)
    return len(rows)


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """JSON lines or Parquet by the file's suffix, written next to `path` and renamed over it, so
    a reader never sees half a file and a failed export leaves the old one."""
    suffix = path.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise PlaygroundError(f"{path}: the output must end in {' or '.join(OUT_SUFFIXES)}, to say which format")
    if not path.parent.is_dir():
        raise PlaygroundError(f"{path.parent}: no such folder")
    table = _arrow_table(rows) if suffix == ".parquet" else None  # fail before creating anything
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("xb") as f:
            if table is None:
                f.writelines(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
            else:
                import pyarrow.parquet as pq

                pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise PlaygroundError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


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
    """Validate every row of a TRL preference file, then import them all in one transaction. Any
    invalid row fails the whole file (a `PlaygroundError` listing the lines), unless `skip_invalid`."""
    loaded = load_pairs(path, skip_invalid=skip_invalid)
    if not loaded.rows:
        raise PlaygroundError(f"{path}: no valid rows to import ({len(loaded.skipped)} invalid)")
    return ImportResult(store.import_pairs(loaded.rows, path.name), loaded.skipped)


def _export(args: argparse.Namespace) -> None:
    db = args.db or default_path()
    if not db.is_file():
        raise PlaygroundError(f"{db}: no vote database there (nothing voted yet, or a wrong --db?)")
    with Store(db) as store:
        n = export_rows(store, args.format, args.out, args.binarize.replace("-", "_"), args.seed,
                        args.include_imported)
    print(f"wrote {n} {args.format} rows to {args.out}")


def _import(args: argparse.Namespace) -> None:
    with Store(args.db or default_path()) as store:
        result = import_file(store, args.file, args.skip_invalid)
    print(f"imported {result.imported} rows from {args.file}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} invalid rows:")
        for error in result.skipped:
            print(f"  {error}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m playground.data",
        description="Export the votes as preference data, or import preference pairs to train on.",
    )
    db_help = (f"the vote database (default: $PLAYGROUND_HOME/{DB_NAME}, "
               f"$PLAYGROUND_HOME defaulting to ~/.cache/preference-playground)")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="export or import; COMMAND --help lists its flags"
    )

    export = commands.add_parser(
        "export", help="write the votes to a .jsonl or .parquet file",
        description="Write the votes to a .jsonl or .parquet file (atomically: a temporary file, then renamed).",
    )
    export.add_argument(
        "--format", choices=EXPORT_FORMATS, required=True,
        help="trl: conversational prompt/chosen/rejected rows for TRL's DPOTrainer, with vote_id, "
             "chosen_model, rejected_model and voter (ties and both-bad votes give no rows); "
             "arena: Chatbot Arena battle rows (model_a, model_b, winner, tstamp, vote_id, voter, anonymous)",
    )
    export.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="the file to write: .jsonl for JSON lines, .parquet for Parquet; replaced if it exists")
    export.add_argument(
        "--binarize", choices=("all-pairs", "best-vs-random"), default="all-pairs",
        help="trl only, for votes that rank 3-4 responses: all-pairs gives every (better, worse) pair; "
             "best-vs-random gives the best against one other drawn at random, as UltraFeedback binarized "
             "(default: all-pairs)",
    )
    export.add_argument("--seed", type=int, default=0,
                        help="seed for best-vs-random's draw; the same seed gives the same pairs (default: 0)")
    export.add_argument("--include-imported", action="store_true",
                        help="trl only: add the imported pairs after the votes' pairs, as DPO training sees them")
    export.add_argument("--db", type=Path, metavar="PATH", help=db_help)
    export.set_defaults(run=_export)

    imp = commands.add_parser(
        "import", help="add TRL preference pairs from a file, all or nothing",
        description="Add the preference pairs in FILE to the database for training. Every row is checked "
                    "first; if any is invalid, nothing is imported and the bad lines are listed.",
    )
    imp.add_argument(
        "file", type=Path, metavar="FILE",
        help=f"TRL preference data ({', '.join(IMPORT_FORMATS)}; .json means JSON lines): standard "
             "(prompt/chosen/rejected strings), conversational (message lists) or implicit prompt "
             "(whole chosen/rejected conversations and no prompt)",
    )
    imp.add_argument("--skip-invalid", action="store_true",
                     help="import the valid rows and list the invalid ones, instead of importing nothing")
    imp.add_argument("--db", type=Path, metavar="PATH", help=db_help + "; created if missing")
    imp.set_defaults(run=_import)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.run(args)


if __name__ == "__main__":
    run_cli(main)
