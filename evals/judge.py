"""Automated comparison: run a fixed prompt set through two or more models and let a judge vote.

A judge sees (prompt, response A, response B) and answers with an Arena winner (`model_a`,
`model_b`, `tie`, `tie (bothbad)`) and the numbers it decided on. Its battles are stored in the
database flagged with the judge's name, apart from human votes; the leaderboard can include them.

Judges (`--judge SPEC`):
  shorter, longer        the response with fewer (more) characters wins; equal lengths tie
  contains:PHRASE        the response containing PHRASE (case-insensitive) wins; both or neither tie
  avoids:PHRASE          the response without PHRASE wins
  reward-model:FOLDER    a Bradley–Terry reward model (`python -m playground.reward_model`): the
                         higher r(x, y) wins; details hold both rewards and p(A ≻ B) = σ(r_A − r_B)
  llm:PATH               a local causal LM (HF folder or .gguf) asked a pairwise question; its
                         verdict is the likeliest of the next tokens "A", "B", "tie" (`evals.llm_judge`)
Rule judges are the quick check that training did what the votes asked ("shorter answers"); an
empty response always loses to a non-empty one, and two empty responses are both bad.

Position swap. Every judge sees each pair twice, as (A, B) and as (B, A), in one batch. The battle
is a win only when both orders pick the same *model*; any disagreement is a tie, and both-bad in
both orders stays both-bad (MT-Bench's rule, which cancels a judge's preference for a side).
Details hold both verdicts: `ab` (the pair as stored) and `ba` (swapped; its `winner` is in that
order's own terms, so "model_a" there is the stored model_b), each with the judge's numbers, and
`consistent` (both orders agree). `position_consistency` is the share of consistent battles. Rule
judges and the reward-model judge are order-free (consistency 1); an LLM judge often is not.

Each prompt is answered by every chosen model in one batched generation (seed = `seed` + prompt
number, the same for every model), and every pair of models is one battle per prompt, shown to
the judge in an order drawn at random (seeded), so a judge with a position bias cannot favour a
model by its place in `--models`. Models are stored under their rated names: "policy" becomes
the checkpoint it was serving.
"""

from __future__ import annotations  # the engine's types stay names here: `--help` needs no torch

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.agreement import wilson_interval
from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.data.votes import ARENA_A, ARENA_B, ARENA_BOTH_BAD, ARENA_TIE

if TYPE_CHECKING:
    from playground.models.roles import Models

Verdict = tuple[str, dict[str, Any]]  # (Arena winner, the judge's numbers)
Decide = Callable[[Sequence[Sequence[Message]], Sequence[str], Sequence[str]], list[Verdict]]
RULES = ("shorter", "longer", "contains:PHRASE", "avoids:PHRASE", "reward-model:FOLDER", "llm:PATH")
# A verdict seen from the other order: "model_a" there is "model_b" here; no preference stays as it is.
_SWAP_SIDES = {ARENA_A: ARENA_B, ARENA_B: ARENA_A, ARENA_TIE: ARENA_TIE, ARENA_BOTH_BAD: ARENA_BOTH_BAD}


@dataclass(frozen=True)
class Judge:
    name: str  # stored with every battle, e.g. "rule:shorter" or "reward-model:rm-small"
    decide: Decide  # all battles of a run at once (both orders, `both_orders`), so a model judge can batch


def orders_agree(winner_ab: str, winner_ba: str) -> bool:
    """True when the verdict on (A, B) and the verdict on the swapped (B, A), in that order's own
    terms, name the same model (or the same no-preference outcome)."""
    return _SWAP_SIDES[winner_ba] == winner_ab


def both_orders(decide: Decide) -> Decide:
    """`decide` run on every pair in both orders, in one call of 2n battles, combined by MT-Bench's
    rule (module docstring): the agreed verdict when the orders agree, else a tie."""
    def swapped(prompts: Sequence[Sequence[Message]], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
        n = len(prompts)
        verdicts = decide([*prompts, *prompts], [*a, *b], [*b, *a])
        if len(verdicts) != 2 * n:
            raise PlaygroundError(f"the judge gave {len(verdicts)} verdicts for {2 * n} battles")
        out = []
        for (w_ab, d_ab), (w_ba, d_ba) in zip(verdicts[:n], verdicts[n:], strict=True):
            consistent = orders_agree(w_ab, w_ba)
            out.append((w_ab if consistent else ARENA_TIE,
                        {"consistent": consistent, "ab": {"winner": w_ab, **d_ab}, "ba": {"winner": w_ba, **d_ba}}))
        return out
    return swapped


@dataclass(frozen=True)
class PositionConsistency:
    """Share of a judge's battles whose two orders agreed, with its 95 % Wilson interval (None with
    no swapped battle). `unswapped` counts stored battles judged in one order only (before the swap
    existed), which are left out."""

    consistent: int
    n: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    unswapped: int


def position_consistency(battles: Iterable[Mapping[str, Any]]) -> PositionConsistency:
    """Position consistency of stored judge battles (`Store.judge_battles`), recomputed from the two
    verdicts in each battle's details."""
    agreed: list[bool] = []
    unswapped = 0
    for battle in battles:
        details = battle.get("details") or {}
        if "ab" not in details or "ba" not in details:
            unswapped += 1
            continue
        agreed.append(orders_agree(details["ab"]["winner"], details["ba"]["winner"]))
    n, consistent = len(agreed), sum(agreed)
    if n == 0:
        return PositionConsistency(0, 0, None, None, None, unswapped)
    low, high = wilson_interval(consistent, n)
    return PositionConsistency(consistent, n, consistent / n, low, high, unswapped)


def _by_score(score: Callable[[str], float]) -> Decide:
    """A rule judge from a per-response score (higher wins); empty responses always lose."""
    def decide(prompts: Sequence[Sequence[Message]], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
        out = []
        for text_a, text_b in zip(a, b, strict=True):
            empty_a, empty_b = not text_a.strip(), not text_b.strip()
            sa, sb = score(text_a), score(text_b)
            if empty_a and empty_b:
                winner = ARENA_BOTH_BAD
            elif empty_a or empty_b:
                winner = ARENA_B if empty_a else ARENA_A
            else:
                winner = ARENA_A if sa > sb else ARENA_B if sb > sa else ARENA_TIE
            out.append((winner, {"score_a": sa, "score_b": sb}))
        return out
    return decide


def rule_judge(spec: str) -> Judge:
    """A named rule judge (see the module docstring)."""
    kind, _, phrase = spec.partition(":")
    if kind in ("shorter", "longer") and not phrase:
        sign = -1.0 if kind == "shorter" else 1.0
        return Judge(f"rule:{kind}", both_orders(_by_score(lambda text: sign * len(text.strip()))))
    if kind in ("contains", "avoids") and phrase.strip():
        needle, sign = phrase.strip().lower(), (1.0 if kind == "contains" else -1.0)
        return Judge(f"rule:{kind}:{phrase.strip()}",
                     both_orders(_by_score(lambda text: sign * float(needle in text.lower()))))
    raise PlaygroundError(f"unknown judge {spec!r}; expected one of {', '.join(RULES)}")


def reward_model_judge(folder: Path, models: Models) -> Judge:
    """The higher reward wins; the reward model is loaded on the models' device and tokenizer."""
    import torch

    from playground.objectives import preference_probability
    from playground.training.reward_model import load_reward_model

    rm = load_reward_model(folder, device=models.device, dtype=models.dtype, tokenizer=models.tokenizer)

    def decide(prompts: Sequence[Sequence[Message]], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
        # Each distinct (prompt, response) is scored once: the swapped order then reads the very same
        # rewards (order-free by construction, whatever the batching), and half the work is saved.
        pairs = [(json.dumps(list(p), sort_keys=True), x, y) for p, x, y in zip(prompts, a, b, strict=True)]
        unique = list(dict.fromkeys((key, text) for key, x, y in pairs for text in (x, y)))
        scores = rm.score([json.loads(key) for key, _ in unique], [text for _, text in unique])
        rewards = dict(zip(unique, scores, strict=True))
        out = []
        for key, x, y in pairs:
            ra, rb = rewards[(key, x)], rewards[(key, y)]
            p_a = float(preference_probability(torch.tensor(ra), torch.tensor(rb)))
            winner = ARENA_A if ra > rb else ARENA_B if rb > ra else ARENA_TIE
            out.append((winner, {"reward_a": ra, "reward_b": rb, "p_a": p_a}))
        return out

    return Judge(f"reward-model:{Path(folder).name}", both_orders(decide))


def make_judge(spec: str, models: Models) -> Judge:
    """The judge a `--judge SPEC` names (module docstring); model judges load on `models`' device."""
    kind, _, location = spec.partition(":")
    if kind == "reward-model":
        return reward_model_judge(Path(location), models)
    if kind == "llm":
        from evals.llm_judge import llm_judge

        return llm_judge(location, models.device, models.dtype)
    return rule_judge(spec)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from playground.cli import HelpFormatter, add_model_args

    parser = argparse.ArgumentParser(
        prog="python -m evals.judge", formatter_class=HelpFormatter,
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="example:\n  python -m evals.judge --models policy,sft --judge shorter\n"
               "  python -m evals.judge --prompts my-prompts.jsonl --models dpo-20261125-101500-ab12cd,sft "
               "--judge reward-model:~/.cache/preference-playground/reward-models/rm-1\n"
               "  python -m evals.judge --models policy,sft --judge llm:~/models/an-instruct-model.gguf",
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
    from playground.cli import models_config, prepare_environment

    prepare_environment(args)
    from tqdm import tqdm

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
    baseline = state.rated_name(models[-1])
    print(f"{len(battles)} battles judged by {judge.name} in both orders; stored in {state.store.location}")
    consistency = position_consistency(battles)
    print(f"position consistency {consistency.rate:.3f}  [{consistency.ci_low:.3f}, {consistency.ci_high:.3f}]  "
          f"({consistency.consistent} of {consistency.n} pairs judged alike in both orders)\n")
    table = win_rate_table(battles, baseline)
    print(f"win rate against {baseline} (ties ½; 95% Wilson interval; mean length in characters)")
    for r in table.itertuples():
        print(f"  {r.model:<32} {r.rate:6.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]  n={r.n:<4} "
              f"W/L/T {r.wins}/{r.losses}/{r.ties}  length {r.mean_len:.0f} vs {r.baseline_mean_len:.0f}")
    return 0


if __name__ == "__main__":
    from playground.cli import run_cli

    run_cli(lambda: main())
