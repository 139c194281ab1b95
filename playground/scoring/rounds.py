"""One playground round: a prompt, k responses from chosen models, their scores and the vote.

The UI holds a `Round` per browser session and calls these functions; scripts can do the same.
"""

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from playground.core.chat import Message, require_text
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_PROMPT_CHARS, MAX_RESPONSES, MAX_SYSTEM_CHARS, MIN_RESPONSES
from playground.data.single_votes import SingleVote, thumb_label
from playground.data.votes import Response, Vote
from playground.inference.generation import Generation
from playground.inference.settings import ENDED, GenerationSettings
from playground.models.catalog import Catalog
from playground.models.roles import Role
from playground.objectives import preference_probability
from playground.scoring.encoding import Encoded
from playground.scoring.scorer import ResponseScore, Scorer


@dataclass(frozen=True)
class SampledKL:
    """The KL(π_θ‖π_ref) estimate under one response: Σ_t log-ratio over its sampled ids, shown
    only where that is unbiased (`Scorer.sampled_log_ratios`)."""

    from_policy: bool  # the response was sampled from the weights serving as π_θ when it was scored
    value: float | None = None  # None unless sampled from π_θ and unbiased
    biased: tuple[str, ...] = ()  # why there is no unbiased estimate: settings, how it ended, truncation


@dataclass(frozen=True)
class Round:
    messages: tuple[Message, ...]
    models: tuple[str, ...]  # the catalog name of each slot's model
    settings: GenerationSettings
    beta: float
    anonymous: bool = False
    # Each slot's name on the leaderboard, by the weights that generated it (`Catalog.rated_name`):
    # "policy" is stored as the checkpoint it served, so votes from before and after a training run
    # rate two different models. Set with the scores; empty, or one name per slot.
    rated_as: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    scores: tuple[ResponseScore, ...] = ()
    kl: tuple[SampledKL, ...] = ()  # per slot, set with the scores
    voted_at: float | None = None
    thumbs: tuple[int, ...] = ()  # the slots given a single vote (👍/👎), in the order given

    @property
    def k(self) -> int:
        return len(self.models)


def chat_messages(prompt: str, system: str = "") -> list[Message]:
    """The conversation sent to the models; checked against the engine's limits."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PlaygroundError("the prompt is empty")
    if not isinstance(system or "", str):
        raise PlaygroundError("the system prompt must be text")
    require_text(prompt, "the prompt")
    require_text(system or "", "the system prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PlaygroundError(f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS} allowed")
    if len(system or "") > MAX_SYSTEM_CHARS:
        raise PlaygroundError(f"the system prompt is {len(system)} characters; at most {MAX_SYSTEM_CHARS} allowed")
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    return [*messages, {"role": "user", "content": prompt}]


def check_slots(names: Sequence[str], catalog: Mapping[str, Role]) -> tuple[str, ...]:
    if not MIN_RESPONSES <= len(names) <= MAX_RESPONSES:
        raise PlaygroundError(f"k = {len(names)} response slots; expected {MIN_RESPONSES} to {MAX_RESPONSES}")
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise PlaygroundError(f"unknown model(s) {', '.join(map(repr, unknown))}; available: {', '.join(catalog)}")
    return tuple(names)


def battle_models(catalog: Mapping[str, Role], rng: random.Random) -> tuple[str, str]:
    """Two models with different weights, drawn at random for an anonymous battle.

    Names sharing weights (by default SFT and reference are one model) count once, so a battle is
    never a model against itself.
    """
    distinct: dict[str, str] = {}
    for name, role in catalog.items():
        distinct.setdefault(role.ident, name)
    if len(distinct) < 2:
        raise PlaygroundError(
            "an anonymous battle needs two different models, and only one is loaded "
            f"({', '.join(catalog)} share the same weights); train a checkpoint or start with --ref/--policy"
        )
    a, b = rng.sample(sorted(distinct.values()), 2)
    return a, b


def score_round(scorer: Scorer, catalog: Catalog, rnd: Round, generation: Generation) -> Round:
    """Attach the final texts, their scores under the serving policy and the reference (β > 0 is
    checked here, by the scorer), each slot's KL estimate (`SampledKL`) and its rated name, both
    decided by the weights that generated it (`generation.weights`), whatever serves now.

    `generation` is `stream_generate`'s last yield for the slots `rnd.models`.
    """
    completions = [[{"role": "assistant", "content": t}] for t in generation.texts]
    scores = scorer.score_responses(list(rnd.messages), completions, rnd.beta)  # batched with other rounds
    with scorer.models.lock:
        kl = sampled_kl(scorer, rnd.settings, generation)
    rated = tuple(catalog.rated_name(w, m) for w, m in zip(generation.weights, rnd.models, strict=True))
    return replace(rnd, texts=generation.texts, scores=tuple(scores), kl=kl, rated_as=rated)


def sampled_kl(scorer: Scorer, settings: GenerationSettings, generation: Generation) -> tuple[SampledKL, ...]:
    """Σ log-ratio over the sampled ids of each slot sampled from π_θ (generated by the weights
    serving now: a response from weights published over since is no sample of π_θ), where it
    estimates KL(π_θ‖π_ref) without bias: T = 1, top-p = 1, top-k = 0, repetition penalty 1, the
    response ended by itself (a cut response is a sample of a different distribution) and was not
    truncated. Call under `models.lock`, so π_θ stays what it was checked to be."""
    policy = scorer.models.policy
    from_settings = settings.sampling_bias()
    out: list[SampledKL] = []
    unbiased: dict[int, Encoded] = {}
    rows = zip(generation.weights, generation.token_ids, generation.endings, strict=True)
    for i, (weights, ids, ending) in enumerate(rows):
        if weights != policy.ident:
            out.append(SampledKL(from_policy=False))
            continue
        row = scorer.sampled_row(generation.prompt_ids, ids)
        biased = [*from_settings, *([ending] if ending != ENDED else []),
                  *([f"cut to {scorer.max_length} tokens"] if row.truncated else [])]
        out.append(SampledKL(from_policy=True, biased=tuple(biased)))
        if not biased:
            unbiased[i] = row
    if unbiased:
        for i, value in zip(unbiased, scorer.sampled_log_ratios(policy, list(unbiased.values())), strict=True):
            out[i] = replace(out[i], value=value)
    return tuple(out)


def preference_matrix(scores: Sequence[ResponseScore]) -> list[list[float]]:
    """P[i][j] = σ(r_i − r_j): Bradley–Terry probability that response i is preferred to j."""
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float64)
    return preference_probability(rewards[:, None], rewards[None, :]).tolist()


def token_pieces(tokenizer, token_ids: Sequence[int]) -> list[str]:
    """Each token as the text it adds (special tokens shown by name), for the per-token view."""
    return [tokenizer.decode([t]) for t in token_ids]


# Σ log-ratio over the re-encoded text is `log_ratio`; the KL estimate proper lives in `Round.kl`.
SCORE_FIELDS = ("logp_policy", "logp_ref", "log_ratio", "reward", "n_tokens", "mean_logp_policy")


def _responses(rnd: Round) -> tuple[Response, ...]:
    """The round's responses as stored with a vote: model as shown and as rated, text, scores."""
    if not rnd.scores:
        raise PlaygroundError("nothing to vote on yet: generate responses first")
    if rnd.rated_as and len(rnd.rated_as) != rnd.k:
        raise PlaygroundError(f"the round names {len(rnd.rated_as)} rated models for {rnd.k} responses")
    rated = rnd.rated_as or (None,) * rnd.k
    return tuple(
        Response(model=m, text=t, scores={f: float(getattr(s, f)) for f in SCORE_FIELDS}, rated_as=r)
        for m, t, s, r in zip(rnd.models, rnd.texts, rnd.scores, rated, strict=True)
    )


def _settings(rnd: Round) -> dict[str, Any]:
    return {**asdict(rnd.settings), "beta": rnd.beta}


def make_vote(rnd: Round, outcome: str, voter: str, ranking: Sequence[int] | None = None) -> Vote:
    """The stored record of a vote on a scored round (the store validates outcome and ranking)."""
    responses = _responses(rnd)
    if rnd.voted_at is not None:
        raise PlaygroundError("this round already has a vote; generate a new one")
    return Vote(prompt=list(rnd.messages), responses=responses, outcome=outcome,
                ranking=tuple(ranking) if ranking is not None else None, voter=voter, settings=_settings(rnd),
                anonymous=rnd.anonymous, created_at=time.time())


def make_single_vote(rnd: Round, slot: int, thumb: str, voter: str) -> SingleVote:
    """The record of a 👍 ("up") or 👎 ("down") on one response of a scored round; each response
    takes one (`Round.thumbs` lists those given), with or without a pairwise vote beside it."""
    responses = _responses(rnd)
    if type(slot) is not int or not 0 <= slot < rnd.k:
        raise PlaygroundError(f"response slot {slot!r} is not one of 0..{rnd.k - 1} (A..)")
    if slot in rnd.thumbs:
        raise PlaygroundError("this response already has your 👍/👎; generate a new round")
    return SingleVote(prompt=list(rnd.messages), response=responses[slot], label=thumb_label(thumb), slot=slot,
                      voter=voter, settings=_settings(rnd), anonymous=rnd.anonymous, created_at=time.time())
