"""`playground judge`: run a prompt set through two or more models and let a judge vote in both
orders; the battles go into the vote database flagged with the judge's name (judges: `evals.judge`)."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cli.common import HelpFormatter, add_model_args, models_config, prepare_environment
from evals import judge as judges
from evals.judge import RULES


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="playground judge", formatter_class=HelpFormatter,
        description=judges.__doc__.split("\n\n", 1)[1] if judges.__doc__ else None,
        epilog="example:\n  playground judge --models policy,sft --judge shorter\n"
               "  playground judge --prompts my-prompts.jsonl --models dpo-20261125-101500-ab12cd,sft "
               "--judge reward-model:~/.cache/preference-playground/reward-models/rm-1\n"
               "  playground judge --models policy,sft --judge llm:~/models/an-instruct-model.gguf",
    )
    add_model_args(parser)
    j = parser.add_argument_group("judging")
    j.add_argument("--models", required=True, help="comma-separated: roles (sft, reference, policy) and checkpoint "
                   "ids, at least 2; the last is the baseline of the printed win rates")
    j.add_argument("--judge", required=True, metavar="SPEC", help=f"one of: {', '.join(RULES)}")
    j.add_argument("--prompts", type=Path, default=None, help="prompt file (JSONL/CSV/Parquet, a `prompt` column; "
                   "default: the shipped docs/examples/eval-prompts.jsonl)")
    j.add_argument("--set", default=None, help="a prompt set stored in the database instead of --prompts")
    j.add_argument("--max-new-tokens", type=int, default=128)
    j.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    j.add_argument("--seed", type=int, default=0)
    j.add_argument("--db", default=None, metavar="PATH|URL", help="vote database: a SQLite file or a postgresql:// "
                   "URL (default: $PLAYGROUND_DB_URL, else $PLAYGROUND_HOME/votes.sqlite)")
    args = parser.parse_args(argv)
    if args.prompts is not None and args.set is not None:
        parser.error("give --prompts or --set, not both")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_environment(args)
    from tqdm import tqdm

    from evals.judge import position_consistency
    from evals.judges import make_judge
    from evals.winrate import win_rate_table
    from playground.core.home import data_dir
    from playground.data.store import db_location
    from playground.inference.generation import GenerationSettings
    from service.evaluation import judge_prompts, run_judge  # the application layer, as the app uses it
    from service.state import build_state

    settings = GenerationSettings(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                  seed=args.seed).validate()
    home = data_dir()
    state = build_state(models_config(args, home), home, db_path=db_location(args.db, home))
    judge = make_judge(args.judge, state.models)
    prompts = judge_prompts(state, args.set, args.prompts)
    bar = tqdm(total=len(prompts), unit="prompt", desc="generating", file=sys.stderr)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    battles = run_judge(state, prompts, models, judge, settings,
                        progress=lambda done, _total, _what: bar.update(done - bar.n))
    bar.close()
    baseline = state.catalog.rated_now(models[-1])
    print(f"{len(battles)} battles judged by {judge.name} in both orders; stored in {state.store.database.location}")
    consistency = position_consistency(battles)
    print(f"position consistency {consistency.rate:.3f}  [{consistency.ci_low:.3f}, {consistency.ci_high:.3f}]  "
          f"({consistency.consistent} of {consistency.n} pairs judged alike in both orders)\n")
    table = win_rate_table(battles, baseline)
    print(f"win rate against {baseline} (ties ½; 95% Wilson interval; mean length in characters)")
    for r in table.itertuples():
        print(f"  {r.model:<32} {r.rate:6.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]  n={r.n:<4} "
              f"W/L/T {r.wins}/{r.losses}/{r.ties}  length {r.mean_len:.0f} vs {r.baseline_mean_len:.0f}")
    return 0

