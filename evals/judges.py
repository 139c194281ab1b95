"""Every judge by the spec that names it (`--judge SPEC`, the Dashboard's judge picker): the rules and
the reward model (`evals.judge`), and an LLM (`evals.llm_judge`)."""

from pathlib import Path

from evals.judge import Judge, reward_model_judge, rule_judge
from evals.llm_judge import llm_judge
from playground.models.roles import Models


def make_judge(spec: str, models: Models) -> Judge:
    """The judge a `--judge SPEC` names (module docstring); model judges load on `models`' device."""
    kind, _, location = spec.partition(":")
    if kind == "reward-model":
        return reward_model_judge(Path(location), models)
    if kind == "llm":
        return llm_judge(location, models.device, models.dtype)
    return rule_judge(spec)
