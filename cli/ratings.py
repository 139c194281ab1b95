"""`playground ratings`: Bradley–Terry ratings with bootstrap intervals from Chatbot Arena battle rows
(the model and its formulas: `evals.ratings.bradley_terry` and `evals.ratings.style`)."""

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from cli.clean import add_cleaning_args, cleaned
from cli.common import HelpFormatter
from evals.battle import in_category
from evals.battles import read_battles
from evals.ratings.indexed import index_battles
from evals.ratings.newton import RIDGE
from evals.ratings.results import DEFAULT_ANCHOR, RatingsResult, compute_ratings, to_json
from evals.ratings.style import style_features
from playground.core.atomic import write_json
from playground.core.errors import PlaygroundError


def format_leaderboard(result: RatingsResult) -> str:
    """The leaderboard as an aligned text table: rank, model, rating, 95% CI, battles, W/L/T."""
    header = ["rank", "model", "rating", "95% CI", "battles", "W/L/T"]
    rows = [
        [str(row["rank"]), str(name), f"{row['rating']:.1f}",
         "—" if math.isnan(row["ci_low"]) else f"[{row['ci_low']:.1f}, {row['ci_high']:.1f}]",
         str(row["n_battles"]), f"{row['wins']}/{row['losses']}/{row['ties']}"]
        for name, row in result.leaderboard.astype(object).iterrows()
    ]
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(header)]
    right = {0, 2, 4}  # numbers line up on the right

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if k in right else c.ljust(w)
                         for k, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="playground ratings", formatter_class=HelpFormatter,
        description="Rate models from pairwise battles: Chatbot Arena rows with model_a, model_b and\n"
                    "winner (model_a, model_b, tie or tie (bothbad)).\n\n"
                    "Bradley–Terry maximum likelihood on the Elo scale,\n"
                    "    P(a beats b) = 1 / (1 + 10^((R_b − R_a)/400)),\n"
                    "a tie counting as half a win each way, with a tiny ridge so that a model that never lost\n"
                    "still gets a finite rating; the anchor model is fixed at 1000. 95% intervals come from\n"
                    "resampling the votes with replacement: rows with the same vote_id (a ranking's battles)\n"
                    "stay together, a row without one is a vote of its own. Prints the leaderboard; writes\n"
                    "the ratings, online Elo and the battle, win-fraction and predicted-win matrices to OUT\n"
                    "as JSON.",
        epilog="example: playground data export --format arena --out battles.jsonl\n"
               "         playground ratings --battles battles.jsonl --out ratings.json",
    )
    parser.add_argument("--battles", type=Path, required=True, metavar="FILE",
                        help="battle rows: .jsonl (or .json: JSON lines or one list), .csv or .parquet")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT",
                        help="JSON file to write (atomically; replaced if it exists)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap rounds for the 95%% intervals; 0 for none (intervals null)")
    parser.add_argument("--anchor", metavar="MODEL",
                        help=f"model fixed at 1000 (default: {DEFAULT_ANCHOR!r} if present, else the "
                             "alphabetically first)")
    parser.add_argument("--ridge", type=float, default=RIDGE, metavar="λ",
                        help="ridge λ of the N(0, 1/λ) prior on the log-odds strengths: what keeps a model "
                             "that never lost finite; larger pulls such ratings in harder")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the bootstrap draws; the same seed gives the same intervals (default: 0)")
    parser.add_argument("--style-control", action="store_true",
                        help="ratings at equal style (Chatbot Arena's style control): the fit gains the\n"
                             "normalised differences in answer length (tokens), Markdown headers, list items\n"
                             "and bold spans, read from each row's conv_metadata; prints their coefficients")
    parser.add_argument("--category", metavar="NAME",
                        help="only the battles whose category is NAME (the prompt's category in the set)")
    add_cleaning_args(parser, switch=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.bootstrap < 0:
        raise PlaygroundError(f"--bootstrap must be ≥ 0 (0: no intervals), got {args.bootstrap}")
    battles = cleaned(read_battles(args.battles), args)
    if args.category is not None:
        battles = in_category(battles, args.category)
    style = style_features(battles, f"{args.battles}: ") if args.style_control else None
    result = compute_ratings(index_battles(battles), bootstrap=args.bootstrap, anchor=args.anchor, seed=args.seed,
                             ridge=args.ridge, style=style)
    if not args.out.parent.is_dir():
        raise PlaygroundError(f"{args.out.parent}: no such folder")
    write_json(args.out, to_json(result))
    ci = f", 95% intervals from {result.bootstrap} bootstrap rounds" if result.bootstrap else ", no intervals"
    print(f"{result.n_battles} battles from {result.n_votes} votes, {len(result.leaderboard)} models, "
          f"{result.anchor} = 1000{ci}")
    print(format_leaderboard(result))
    if result.style is not None:
        print("ratings at equal style; style coefficients (log-odds per typical difference, a minus b; 95% CI):")
        for name, row in result.style.iterrows():
            ci = "" if math.isnan(row["ci_low"]) else f"  [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
            print(f"  {name:8s} {row['coefficient']:+.3f}{ci}  ({row['elo']:+.1f} Elo)")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 0

