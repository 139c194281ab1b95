"""`playground bench NAME [flags]`: run one benchmark of `bench/` (or `all`, as `make bench` does);
each prints its table and writes `bench/results/NAME.json`."""

import argparse
import importlib

from cli.common import HelpFormatter

BENCHMARKS = {
    "startup": "cold (GGUF conversion) vs warm start of the default models",
    "scoring": "our reference pass vs TRL's on the same pairs; batched vs one sequence at a time",
    "generation": "k responses in one batch vs one at a time",
    "dpo": "a DPO step: ours vs TRL's DPOTrainer (defaults and tuned), plus KTO, SimPO, ORPO",
    "rlhf": "RLOO and GRPO: ours vs TRL's trainers, and the generation floor",
    "ratings": "batched bootstrap vs a per-round loop; style control's cost",
    "load": "simulated voters against the app in a subprocess: one continuous batch vs --serial",
    "store": "SQLite vs PostgreSQL under 1, 8 and 32 writer threads",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="playground bench", formatter_class=HelpFormatter,
        description="Run a benchmark; `playground bench NAME --help` lists its flags. Ratios measured side by side "
                    "in one run are what to read: these machines are shared and noisy.",
        epilog="benchmarks:\n" + "\n".join(f"  {n:<11} {d}" for n, d in BENCHMARKS.items())
               + "\n  all         every one of them, in this order (minutes to an hour)",
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], metavar="NAME", help="the benchmark, or all")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own flags")
    args = parser.parse_args(argv)
    for name in BENCHMARKS if args.name == "all" else [args.name]:
        importlib.import_module(f"bench.{name}").main(args.args)
    return 0
