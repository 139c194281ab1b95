"""Automated comparison: run a fixed prompt set through two or more models and let a judge vote.

A judge sees (prompt, response A, response B) and answers with an Arena winner (`model_a`,
`model_b`, `tie`, `tie (bothbad)`) and the numbers it decided on. Its battles are stored in the
database flagged with the judge's name, apart from human votes; the leaderboard can include them.

Judges (`--judge SPEC`):
  shorter, longer        the response with fewer (more) characters wins; equal lengths tie
  contains:PHRASE        the response containing PHRASE (case-insensitive) wins; both or neither tie
  avoids:PHRASE          the response without PHRASE wins
  reward-model:FOLDER    a Bradley–Terry reward model (`playground reward-model`): the
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

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.agreement import wilson_interval
from evals.battle import Battle
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


def position_consistency(battles: Iterable[Battle]) -> PositionConsistency:
    """Position consistency of a judge's battles (`evals.battles.judge_battles`), recomputed from the
    two verdicts in each battle's details."""
    agreed: list[bool] = []
    unswapped = 0
    for battle in battles:
        details = battle.details or {}
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
