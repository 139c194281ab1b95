"""Playground rounds: prompt limits, slot checks, anonymous battles and the stored vote."""

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from playground.core.errors import PlaygroundError
from playground.inference.generation import stream_generate
from playground.inference.scheduler import Scheduler
from playground.inference.settings import GenerationSettings
from playground.models.catalog import Catalog
from playground.models.checkpoints import set_policy_weights
from playground.models.roles import Models, ModelsConfig, adapter_params, load_models
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


def test_chat_messages_limits() -> None:
    assert chat_messages("hi", " ") == [{"role": "user", "content": "hi"}]
    assert chat_messages("hi", "sys")[0] == {"role": "system", "content": "sys"}
    with pytest.raises(PlaygroundError, match="empty"):
        chat_messages("   ")
    with pytest.raises(PlaygroundError, match=f"at most {MAX_PROMPT_CHARS}"):
        chat_messages("x" * (MAX_PROMPT_CHARS + 1))


def trained(models: Models, seed: int = 0) -> Models:
    """Publish new LoRA weights as the policy, as a finished training run does (a new identity)."""
    g = torch.Generator().manual_seed(seed)
    weights = {n: torch.randn(p.shape, generator=g) * 0.5 if "lora_B" in n else p.detach()
               for n, p in adapter_params(models.policy.model).items()}
    set_policy_weights(models, weights, "trained", f"{models.sft.ident}+trained-{seed}")
    return models


def test_battle_needs_two_different_weights(tiny_model_dir: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(tiny_model_dir)))
    catalog = models.roles()  # policy given as the very same folder: one set of weights
    with pytest.raises(PlaygroundError, match="needs two different models"):
        battle_models(catalog, random.Random(0))
    default = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    assert default.policy_is_sft  # a fresh adapter (B = 0) is the SFT model: nothing to battle
    with pytest.raises(PlaygroundError, match="needs two different models"):
        battle_models(default.roles(), random.Random(0))
    trained(default)
    assert not default.policy_is_sft
    draws = {tuple(sorted(battle_models(default.roles(), random.Random(s)))) for s in range(20)}
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
    models = trained(load_models(ModelsConfig(sft=str(tiny_model_dir))))
    settings = GenerationSettings(temperature=1.0, max_new_tokens=5, seed=7)
    rnd = Round(messages=tuple(chat_messages("Say hi.")), models=("policy", "sft"), settings=settings, beta=0.5)
    with pytest.raises(PlaygroundError, match="generate responses first"):
        make_vote(rnd, "a", "ana")
    slots = [models.policy, models.sft]
    *_, final = stream_generate(Scheduler(models), slots, list(rnd.messages), settings)
    scored = score_round(Scorer(models), Catalog(models), rnd, final)
    matrix = preference_matrix(scored.scores)
    assert matrix[0][1] == pytest.approx(1 - matrix[1][0])
    vote = make_vote(scored, "a", "ana")
    assert [r.text for r in vote.responses] == list(final.texts)
    assert vote.responses[0].scores["reward"] == pytest.approx(scored.scores[0].reward)
    assert vote.settings["seed"] == 7 and vote.settings["beta"] == 0.5
    # Rated by the weights that generated each response: trained weights that are no checkpoint keep their slot's name.
    assert [r.rated_as for r in vote.responses] == ["policy", "sft"] and "rated_as" not in vote.settings
    with pytest.raises(PlaygroundError, match="2 rated models for 3 responses"):
        make_vote(replace(scored, models=("policy", "sft", "sft"), texts=(*scored.texts, "x"),
                          scores=(*scored.scores, scored.scores[0])), "ranking", "ana", (0, 1, 2))
