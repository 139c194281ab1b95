"""KL(π_θ ‖ π_ref) of a model to the reference, estimated on a fixed prompt set.

For each prompt x, y ~ π_θ(·|x) is sampled at temperature 1 with no top-k/top-p (the estimator is
unbiased only for such samples) and KL(x) ≈ Σ_t [log π_θ − log π_ref](y_t)
(`Scorer.sampled_log_ratios`, as in the Playground's score table). The reported value is the
mean over prompts × samples with its standard error. Responses are cut at `max_new_tokens`, so
this is the KL of the first `max_new_tokens` tokens: compare checkpoints at the same setting.

Given a reward model, the same samples are scored by it too: the mean reward r_φ(x, y) on the
fixed prompts, the other axis of "reward bought per nat of KL" (RLHF's objective is
E[r_φ] − β·KL). DPO, KTO, SimPO, ORPO and RLHF checkpoints are all measured this one way.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from playground.core.errors import PlaygroundError
from playground.models.roles import Role
from playground.scoring.encoding import Message
from playground.scoring.generation import eos_ids, prompt_ids
from playground.scoring.scorer import Scorer

# The shipped fixed prompt set: checkpoints estimated on it are comparable with each other.
EVAL_PROMPTS = Path(__file__).resolve().parent.parent / "docs" / "examples" / "eval-prompts.jsonl"


Reward = Callable[[list[list[Message]], list[str]], list[float]]  # (prompts, responses) -> r_φ per response


@dataclass(frozen=True)
class KLEstimate:
    mean: float  # nats per response
    stderr: float
    n: int  # samples
    max_new_tokens: int
    reward_mean: float | None = None  # the reward model's mean r_φ(x, y) over the same samples
    reward_stderr: float | None = None
    reward_model: str | None = None  # which reward model scored them


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / √n)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
    return mean, math.sqrt(var / len(values))


def eval_prompts(path: Path = EVAL_PROMPTS) -> list[list[Message]]:
    """The prompts of a prompt file as chat messages (a string prompt is one user message)."""
    from playground.data.prompt_sets import load_prompt_file

    return [list(p.messages) for p in load_prompt_file(path)]


def estimate_kl(scorer: Scorer, role: Role, prompts: Sequence[Sequence[Message]], samples: int = 2,
                max_new_tokens: int = 48, seed: int = 0,
                progress: Callable[[int, int], None] | None = None,
                reward: Reward | None = None, reward_model: str | None = None) -> KLEstimate:
    """Sample `samples` responses per prompt from `role` and estimate its KL to the reference; with
    `reward` (named `reward_model`), also the mean reward of the same samples.

    The sampled token ids themselves are scored (not their decoded text, which can tokenize
    differently), up to and including the end-of-turn token when one was sampled; the reward model
    reads the decoded text.
    """
    models = scorer.models
    eos = set(eos_ids(models))
    values: list[float] = []
    judged: list[tuple[list[Message], str]] = []  # (prompt, decoded response) for the reward model
    for n, messages in enumerate(prompts):
        ids = prompt_ids(models, messages).to(models.device)  # (1, T)
        batch = ids.expand(samples, -1)
        with models.lock:
            with torch.inference_mode(), role.active() as model:
                torch.manual_seed(seed + n)
                out = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), do_sample=True,
                                     temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                                     max_new_tokens=max_new_tokens, pad_token_id=models.tokenizer.pad_token_id)
            rows = [scorer.sampled_row(ids[0].tolist(), _until_eos(row[ids.shape[1]:].tolist(), eos)) for row in out]
            rows = [r for r in rows if r.completion_ids]
            values += scorer.sampled_log_ratios(role, rows)
        judged += [(list(messages), models.tokenizer.decode(r.completion_ids, skip_special_tokens=True))
                   for r in rows]
        if progress:
            progress(n + 1, len(prompts))
    if not values:
        raise PlaygroundError("every sample ended at once (an empty response); nothing to estimate KL from")
    mean, stderr = mean_stderr(values)
    if reward is None:
        return KLEstimate(mean, stderr, len(values), max_new_tokens)
    reward_mean, reward_stderr = mean_stderr(reward([p for p, _ in judged], [t for _, t in judged]))
    return KLEstimate(mean, stderr, len(values), max_new_tokens, reward_mean, reward_stderr, reward_model)


def _until_eos(tokens: list[int], eos: set[int]) -> tuple[int, ...]:
    """The sampled completion: up to and including the first end token (padding follows it)."""
    for i, t in enumerate(tokens):
        if t in eos:
            return tuple(tokens[: i + 1])
    return tuple(tokens)
