"""`playground clean`: flag the battles that should not be rated (identity leaks, outlier voters,
duplicate prompts, repeat votes, daily caps; the rules and their sources: `evals.cleaning`), write
every row back with its flags, and a report of what each rule excluded."""

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cli.common import HelpFormatter
from evals.battle import Battle
from evals.battles import read_battle_rows
from evals.cleaning import CleaningConfig, CleaningReport, clean, kept, prompt_key
from playground.core.atomic import write_file, write_json
from playground.core.errors import PlaygroundError


def add_cleaning_args(parser: argparse.ArgumentParser, switch: bool) -> None:
    """The cleaning rules' flags; with `switch`, also --clean/--no-clean (the ratings and win-rate
    commands: on by default, as Chatbot Arena rates only cleaned battles)."""
    g = parser.add_argument_group("cleaning (evals.cleaning: each rule flags battles, which are then left out)")
    if switch:
        g.add_argument("--clean", action=argparse.BooleanOptionalAction, default=True,
                       help="leave out the battles the cleaning rules flag (default: on)")
    g.add_argument("--no-identity", dest="identity", action="store_false",
                   help="keep anonymous battles whose prompt or answers name a model")
    g.add_argument("--identity-word", dest="identity_words", action="append", default=[], metavar="WORD",
                   help="another name to treat as an identity leak (repeatable; Arena's 33 words always apply)")
    g.add_argument("--no-outliers", dest="outliers", action="store_false", help="test no voter")
    g.add_argument("--alpha", type=float, default=0.05, help="level of the outlier-voter tests (default 0.05)")
    g.add_argument("--min-votes", type=int, default=5, help="voters with fewer votes are not tested (default 5)")
    g.add_argument("--max-votes", type=int, default=100, help="votes Arena's test reads per voter (default 100)")
    g.add_argument("--no-duplicates", dest="duplicates", action="store_false",
                   help="keep every battle of frequent prompts and repeat votes")
    g.add_argument("--dedup-percentile", type=float, default=0.9999,
                   help="prompts asked more often than this quantile of prompt counts are down-sampled")
    g.add_argument("--dedup-seed", type=int, default=42, help="seed of that down-sampling (Arena's: 42)")
    g.add_argument("--max-votes-per-day", type=int, default=None, metavar="N",
                   help="keep each voter's first N battles of a UTC day (default: no cap)")


def cleaning_config(args: argparse.Namespace) -> CleaningConfig:
    return CleaningConfig(identity=args.identity, outliers=args.outliers, duplicates=args.duplicates,
                          extra_words=tuple(args.identity_words), alpha=args.alpha, min_votes=args.min_votes,
                          max_votes=args.max_votes, dedup_percentile=args.dedup_percentile,
                          dedup_seed=args.dedup_seed, max_votes_per_day=args.max_votes_per_day).validate()


def cleaned(battles: list[Battle], args: argparse.Namespace) -> list[Battle]:
    """`battles` less those the rules flag when --clean is on, saying how many were left out."""
    if not args.clean:
        return battles
    report = clean(battles, cleaning_config(args))
    if report.excluded:
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(report.counts().items()))
        print(f"cleaning left out {report.excluded} of {len(battles)} battles ({rules}); --no-clean keeps them")
    return kept(battles, report)


def report_json(report: CleaningReport, total: int) -> dict[str, Any]:
    return {"battles": total, "excluded": report.excluded, "by_rule": report.counts(),
            "identity_words": report.identity_words,
            "outlier_voters": [asdict(e) for e in report.outlier_voters],
            "duplicated_prompts": [{"prompt": p, "battles": n, "kept": k}
                                   for p, (n, k) in report.duplicated_prompts.items()],
            "capped_voters": report.capped_voters}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="playground clean", formatter_class=HelpFormatter,
        description="Flag the battles that should not be rated, as Chatbot Arena's pipeline does: identity leaks\n"
                    "in anonymous battles, outlier voters (Arena's e-value test and a position + agreement test\n"
                    "with Holm's correction), prompts asked far more often than the rest, a voter's repeat\n"
                    "votes, and votes over a daily cap. Every row is written back with `flags` (why it is left\n"
                    "out; empty: kept) and Arena's `dedup_tag`; nothing is dropped.",
        epilog="example: playground data export --format arena --out battles.jsonl\n"
               "         playground clean --battles battles.jsonl --out cleaned.jsonl --report report.json",
    )
    parser.add_argument("--battles", type=Path, required=True, metavar="FILE",
                        help="battle rows: .jsonl (or .json), .csv or .parquet; `judge` (or `voter`), `anony`, "
                             "`conversation_a`/`_b` and `tstamp` are read where present")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.jsonl", help="the rows with their flags")
    parser.add_argument("--report", type=Path, metavar="REPORT.json", help="what each rule flagged, as JSON")
    add_cleaning_args(parser, switch=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in (args.out, args.report):
        if path is not None and not path.parent.is_dir():
            raise PlaygroundError(f"{path.parent}: no such folder")
    config = cleaning_config(args)
    rows = read_battle_rows(args.battles)
    report = clean([battle for _, battle in rows], config)
    duplicated = {n for n, flags in enumerate(report.flags) if "duplicate-prompt" in flags}
    frequent = set(report.duplicated_prompts)
    lines = []
    for n, (record, battle) in enumerate(rows):
        tag = {"high_freq": prompt_key(battle) in frequent, "sampled": n not in duplicated}
        lines.append(json.dumps({**record, "flags": list(report.flags[n]), "dedup_tag": tag}, ensure_ascii=False,
                                default=str) + "\n")
    write_file(args.out, lambda f: f.write("".join(lines).encode()))
    if args.report is not None:
        write_json(args.report, report_json(report, len(rows)))
    rules = ", ".join(f"{rule} {n}" for rule, n in sorted(report.counts().items())) or "none"
    print(f"{report.excluded} of {len(rows)} battles flagged ({rules}); wrote {args.out}")
    for e in report.outlier_voters:
        print(f"  outlier voter {e.voter} ({e.test}, {e.votes} votes): {e.detail}")
    return 0
