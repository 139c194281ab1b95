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
from dataclasses import dataclass, replace
from pathlib import Path

from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.inference.scheduler import Scheduler
from playground.inference.settings import GenerationSettings, prompt_ids
from playground.models.roles import Role
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


def estimate_kl(scheduler: Scheduler, scorer: Scorer, role: Role, prompts: Sequence[Sequence[Message]],
                samples: int = 2, max_new_tokens: int = 48, seed: int = 0,
                progress: Callable[[int, int], None] | None = None,
                reward: Reward | None = None, reward_model: str | None = None) -> KLEstimate:
    """Sample `samples` responses per prompt from `role` and estimate its KL to the reference; with
    `reward` (named `reward_model`), also the mean reward of the same samples.

    The samples are rows of the app's generation batch (`scheduler`), at most `max_batch` at a time
    over all prompts, each with its own seed. The sampled token ids themselves are scored (not their
    decoded text, which can tokenize differently), up to and including the end-of-turn token when
    one was sampled; the reward model reads the decoded text. `progress(done, total)` counts samples.
    """
    models = scorer.models
    settings = GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                                  max_new_tokens=max_new_tokens, seed=seed).validate()
    todo = [(list(m), tuple(prompt_ids(models, m)[0].tolist())) for m in prompts for _ in range(samples)]
    values: list[float] = []
    judged: list[tuple[list[Message], str]] = []  # (prompt, decoded response) for the reward model
    size = scheduler.cfg.max_batch
    for chunk_no, start in enumerate(range(0, len(todo), size)):
        chunk = todo[start:start + size]
        request = scheduler.submit([role] * len(chunk), [ids for _, ids in chunk],
                                   replace(settings, seed=seed + chunk_no))
        for _ in request.progress():
            pass
        kept = [(messages, scorer.sampled_row(ids, tuple(row.sampled)))
                for (messages, ids), row in zip(chunk, request.rows, strict=True) if row.sampled]
        with models.lock:
            values += scorer.sampled_log_ratios(role, [r for _, r in kept])
        judged += [(messages, models.tokenizer.decode(r.completion_ids, skip_special_tokens=True))
                   for messages, r in kept]
        if progress:
            progress(start + len(chunk), len(todo))
    if not values:
        raise PlaygroundError("every sample ended at once (an empty response); nothing to estimate KL from")
    mean, stderr = mean_stderr(values)
    if reward is None:
        return KLEstimate(mean, stderr, len(values), max_new_tokens)
    reward_mean, reward_stderr = mean_stderr(reward([p for p, _ in judged], [t for _, t in judged]))
    return KLEstimate(mean, stderr, len(values), max_new_tokens, reward_mean, reward_stderr, reward_model)
