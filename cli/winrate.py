"""`playground winrate`: win rates against a baseline from Chatbot Arena battle rows, raw (Wilson
intervals) and length-controlled (AlpacaEval 2's method); the formulas are in `evals.winrate`."""

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cli.clean import add_cleaning_args, cleaned
from cli.common import HelpFormatter
from evals.battle import in_category, models_in
from evals.battles import read_battles
from evals.winrate import JOINT_LC_KEYS, length_controlled_table, win_rate_table
from playground.core.atomic import write_json
from playground.core.errors import PlaygroundError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="playground winrate", formatter_class=HelpFormatter,
        description="Win rates of every model against a baseline from Chatbot Arena battle rows: (wins + ½ ties)\n"
                    "/ battles with Wilson's 95% interval; with --length-controlled also AlpacaEval 2's\n"
                    "length-controlled win rate (the win rate predicted at equal answer length) with a\n"
                    "bootstrap interval over votes.",
        epilog="example: playground winrate --battles battles.jsonl --baseline sft --length-controlled "
               "--out winrates.json",
    )
    parser.add_argument("--battles", type=Path, required=True, metavar="FILE",
                        help="battle rows: .jsonl (or .json), .csv or .parquet; lengths from len_a/len_b or "
                             "conv_metadata")
    parser.add_argument("--baseline", required=True, metavar="MODEL", help="the model every other is compared with")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT", help="JSON file to write (atomically)")
    parser.add_argument("--length-controlled", action="store_true",
                        help="add lc_win_rate, lc_ci_low, lc_ci_high (per pair), lc_warning (why not to trust "
                             "it) and joint_lc_win_rate, joint_lc_ci_low, joint_lc_ci_high (one fit over all "
                             "battles); needs answer lengths")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap rounds for the LC interval; 0 for none (null)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws (default: 0)")
    parser.add_argument("--category", metavar="NAME", help="only the battles whose category is NAME")
    add_cleaning_args(parser, switch=True)
    return parser


def _json_number(value: Any) -> Any:
    if isinstance(value, float | np.floating):  # NaN: no value (pandas' None in a number or text column)
        return None if math.isnan(value) else float(value)
    return int(value) if isinstance(value, np.integer) else value


def _rate(row: dict[str, Any], prefix: str) -> str:
    """A row's `{prefix}win_rate` and its interval, as printed."""
    low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    return f"{row[f'{prefix}win_rate']:.3f}" + ("" if low is None else f" [{low:.3f}, {high:.3f}]")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.bootstrap < 0:
        raise PlaygroundError(f"--bootstrap must be ≥ 0 (0: no interval), got {args.bootstrap}")
    if not args.out.parent.is_dir():
        raise PlaygroundError(f"{args.out.parent}: no such folder")
    battles = cleaned(read_battles(args.battles), args)
    if args.category is not None:
        battles = in_category(battles, args.category)
    if args.baseline not in models_in(battles):
        raise PlaygroundError(f"unknown baseline {args.baseline!r}; the models are {', '.join(models_in(battles))}")
    if args.length_controlled:
        table = length_controlled_table(battles, args.baseline, args.bootstrap, args.seed)
        keep = ["n", "n_votes", "win_rate", "ci_low", "ci_high", "lc_win_rate", "lc_ci_low", "lc_ci_high",
                "length_coefficient", "length_scale", "lc_warning", *JOINT_LC_KEYS]
    else:
        table = win_rate_table(battles, args.baseline).rename(columns={"rate": "win_rate"})
        keep = ["n", "n_votes", "win_rate", "ci_low", "ci_high", "wins", "losses", "ties"]
    models = {str(r["model"]): {k: _json_number(r[k]) for k in keep} for r in table.to_dict("records")}
    write_json(args.out, {"baseline": args.baseline, "length_controlled": args.length_controlled,
                          "bootstrap": args.bootstrap if args.length_controlled else 0, "seed": args.seed,
                          "category": args.category, "models": models})
    for name, r in models.items():
        lc = (f"  LC {_rate(r, 'lc_')}  joint LC {_rate(r, 'joint_lc_')}" if args.length_controlled else "")
        print(f"{name}: win rate {r['win_rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] over {r['n']}{lc}")
        if r.get("lc_warning"):
            print(f"  warning: {r['lc_warning']}")
    print(f"wrote {args.out}")
    return 0

