"""`playground COMMAND …`: every command of the Preference Playground behind one name, as `trl` and
`accelerate` have. Each command is a module of this package with `main(argv) -> int`; it is
imported only when asked for, so `playground --help` answers without loading torch."""

import argparse
import importlib
import sys
from typing import NamedTuple, NoReturn

from cli.common import run_cli


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "serve": Command("cli.serve", "serve the playground in the browser (Gradio): generate, score, vote, train"),
    "train": Command("cli.train", "one DPO update (or IPO, hinge, robust, KTO, SimPO, ORPO) from a preference file"),
    "rlhf": Command("cli.rlhf", "PPO, RLOO or GRPO against a trained reward model"),
    "reward-model": Command("cli.reward_model", "train a Bradley–Terry reward model on preference pairs"),
    "score": Command("cli.score", "score preference pairs: log-probs, implicit rewards, BT probability, DPO loss"),
    "data": Command("cli.data", "export votes, import pairs, import prompt sets, pre-generate their responses"),
    "ratings": Command("cli.ratings", "Bradley–Terry ratings with bootstrap intervals from battle rows"),
    "winrate": Command("cli.winrate", "win rates against a baseline, raw and length-controlled"),
    "clean": Command("cli.clean", "flag identity leaks, outlier voters, duplicates and capped votes in battle rows"),
    "judge": Command("cli.judge", "let a judge (rule, reward model, LLM) compare models in both orders"),
    "bench": Command("cli.bench", "run a benchmark (bench/), print its table, write its JSON"),
    "model": Command("cli.model", "convert the packaged SmolLM2-135M-Instruct once; print its folder"),
}

EXAMPLES = """\
examples:
  playground serve --port 7861
  playground train --pairs docs/examples/short-answers.jsonl --out runs --steps 12
  playground data export --format arena --out battles.jsonl
  playground ratings --battles battles.jsonl --out ratings.json
  playground bench load

`playground COMMAND --help` lists a command's flags."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def _split_lines(self, text: str, width: int) -> list[str]:  # keep the command table's lines
        return text.splitlines()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="playground", formatter_class=_Formatter,
        description="The Preference Playground: compare SFT, reference and DPO policy, vote, train, evaluate.",
        epilog=EXAMPLES,
    )
    width = max(map(len, COMMANDS))
    p.add_argument("command", choices=COMMANDS, metavar="COMMAND",
                   help="one of:\n" + "\n".join(f"{n.ljust(width)}  {c.summary}" for n, c in COMMANDS.items()))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's own flags")
    return p


def main(argv: list[str] | None = None) -> NoReturn:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(COMMANDS[args.command].module)
    run_cli(lambda: module.main(args.args))
