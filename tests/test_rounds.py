"""Playground rounds: prompt limits, slot checks, anonymous battles and the stored vote."""

import random
from pathlib import Path

import pytest

from playground.core.errors import PlaygroundError
from playground.models.roles import ModelsConfig, load_models
from playground.scoring.generation import GenerationSettings
from playground.scoring.rounds import (
    MAX_PROMPT_CHARS,
    Round,
    battle_models,
    chat_messages,
    check_slots,
    make_vote,
    preference_matrix,
    score_round,
)
from playground.scoring.scorer import Scorer
from tests.test_models import perturb_adapter


def test_chat_messages_limits() -> None:
    assert chat_messages("hi", " ") == [{"role": "user", "content": "hi"}]
    assert chat_messages("hi", "sys")[0] == {"role": "system", "content": "sys"}
    with pytest.raises(PlaygroundError, match="empty"):
        chat_messages("   ")
    with pytest.raises(PlaygroundError, match=f"at most {MAX_PROMPT_CHARS}"):
        chat_messages("x" * (MAX_PROMPT_CHARS + 1))


def test_battle_needs_two_different_weights(tiny_model_dir: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(tiny_model_dir)))
    catalog = models.roles()  # policy given as the very same folder: one set of weights
    with pytest.raises(PlaygroundError, match="needs two different models"):
        battle_models(catalog, random.Random(0))
    default = load_models(ModelsConfig(sft=str(tiny_model_dir))).roles()
    draws = {tuple(sorted(battle_models(default, random.Random(s)))) for s in range(20)}
    assert all("policy" in d for d in draws)  # never sft against reference: same weights
    assert len(draws) == 1


def test_check_slots() -> None:
    catalog = {"sft": object(), "policy": object()}
    assert check_slots(["sft", "policy"], catalog) == ("sft", "policy")
    with pytest.raises(PlaygroundError, match="expected 2 to 4"):
        check_slots(["sft"], catalog)
    with pytest.raises(PlaygroundError, match="unknown model"):
        check_slots(["sft", "gpt-9"], catalog)


def test_scored_round_becomes_a_vote(tiny_model_dir: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    perturb_adapter(models.policy.model)
    rnd = Round(messages=tuple(chat_messages("Say hi.")), models=("policy", "sft"),
                settings=GenerationSettings(seed=7), beta=0.5)
    with pytest.raises(PlaygroundError, match="generate responses first"):
        make_vote(rnd, "a", "ana")
    scored = score_round(Scorer(models), rnd, ["Hello!", "Hi."])
    matrix = preference_matrix(scored.scores)
    assert matrix[0][1] == pytest.approx(1 - matrix[1][0])
    vote = make_vote(scored, "a", "ana")
    assert [r.text for r in vote.responses] == ["Hello!", "Hi."]
    assert vote.responses[0].scores["reward"] == pytest.approx(scored.scores[0].reward)
    assert vote.settings["seed"] == 7 and vote.settings["beta"] == 0.5
