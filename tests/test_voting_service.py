"""service.voting: every vote is rated as the weights that generated its responses, on every path
(playground rounds, anonymous battles, the voting queue, pre-generated responses), and a fresh
policy is the SFT model until it has been trained or loaded."""

import random
from dataclasses import replace
from pathlib import Path

import pytest

from evals.battles import human_battles
from evals.ratings.indexed import index_battles
from playground.core.errors import PlaygroundError
from playground.data.prompt_sets import SetPrompt
from playground.data.rows import parse_row
from playground.inference.generation import stream_generate
from playground.inference.settings import STOPPED, GenerationSettings
from playground.models.checkpoints import write_checkpoint
from playground.models.roles import ModelsConfig
from playground.scoring.rounds import chat_messages
from playground.training.dpo import DPOConfig
from playground.training.trainee import trainable_copy
from service import training
from service.pregenerate import choose_models, pregenerate
from service.prompt_sets import EXAMPLE_SET, load_example_set
from service.state import AppState, build_state
from service.voting import (
    FRESH_POLICY_LABEL,
    generate_round,
    next_queue_item,
    record_vote,
    score_generated,
    slot_choices,
    start_round,
    stop_generation,
)
from tests.test_models import perturb_adapter

FAST = DPOConfig(steps=2, lr=5e-3, batch_size=2)
SAMPLED = GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4, seed=3)
PAIRS = [{"prompt": f"Question {i}?", "chosen": "Yes.", "rejected": "No, a long wrong answer."} for i in range(6)]


@pytest.fixture
def state(tiny_state: AppState) -> AppState:
    # Imported pairs to train on: no votes of their own, so the leaderboard holds only the test's votes.
    tiny_state.store.imports.add_pairs([parse_row(p, i + 1) for i, p in enumerate(PAIRS)], "pairs.jsonl")
    return tiny_state


def train(state: AppState) -> str:
    """A short DPO run from the serving policy; its checkpoint serves as the policy afterwards."""
    result = training.start_training(state, FAST).result(timeout=300)
    assert result.checkpoint is not None
    return result.checkpoint.name


def playground_vote(state: AppState, slots: list[str] | None, outcome: str = "a", rng: int = 0):
    """A playground round as the tab plays it, through the service: start, generate, score, vote."""
    rnd = start_round(state, chat_messages("Say hi."), slots, SAMPLED, 0.1, random.Random(rng))
    *_, final = generate_round(state, rnd, "script")
    return record_vote(state, score_generated(state, rnd, final), outcome, "ana")


def test_a_round_from_a_script_streams_scores_and_stops(state: AppState) -> None:
    rnd = start_round(state, chat_messages("Say hi."), ["policy", "reference"], SAMPLED, 0.1)
    steps = list(generate_round(state, rnd, "script"))
    assert len(steps) >= 2 and steps[-1].endings[0] is not None
    scored = score_generated(state, rnd, steps[-1])
    assert scored.texts == steps[-1].texts and len(scored.scores) == len(scored.kl) == 2
    # A fresh policy is the reference's weights: every log-ratio is 0, and both slots count as sampled from π_θ.
    assert all(s.log_ratio == 0.0 for s in scored.scores) and all(k.from_policy for k in scored.kl)
    long = replace(rnd, settings=replace(SAMPLED, max_new_tokens=64))
    running = generate_round(state, long, "script")
    next(running)
    stop_generation(state, "script")
    *_, stopped = running
    assert STOPPED in stopped.endings and all(len(ids) < 64 for ids in stopped.token_ids)


def test_pregenerated_responses_are_rated_as_the_checkpoint_that_generated_them(state: AppState) -> None:
    first = train(state)  # serving while the set is pre-generated
    prompts = [SetPrompt(f"q{i}", [{"role": "user", "content": f"Say hi {i}."}]) for i in range(3)]
    pset = choose_models(state, state.store.prompt_sets.add("eval", "test", prompts), ["policy", "reference"], SAMPLED)
    assert pregenerate(state, pset).generated == 6
    second = train(state)  # serves from now on: the votes below must not be rated as it
    assert state.rated_name("policy") == second != first

    for i in range(3):
        turn = next_queue_item(state, "eval", "ana", rng=random.Random(i))
        assert turn.item is not None
        stored = record_vote(state, turn.item, "ab"[i % 2], "ana")
        rated = {r.model: r.rated_as for r in stored.vote.responses}
        assert rated == {"policy": first, "reference": "sft"}  # a reference with the SFT weights is sft
    assert next_queue_item(state, "eval", "ana").item is None

    battles = human_battles(state.store)
    assert len(battles) == 3
    assert {b.model_a for b in battles} | {b.model_b for b in battles} == {first, "sft"}
    assert index_battles(battles).models == tuple(sorted([first, "sft"]))  # the leaderboard's models
    assert all(v.settings.get("rated_as") is None for v in state.store.votes.list())  # a field, not a setting


def test_live_queue_generation_is_rated_as_the_policy_serving_then(state: AppState) -> None:
    pset = state.store.prompt_sets.add("live", "test", [SetPrompt("q0", [{"role": "user", "content": "Hi?"}])])
    choose_models(state, pset, ["policy", "sft"], SAMPLED)
    name = train(state)
    turn = next_queue_item(state, "live", "bo")  # generated now, by checkpoint `name`
    assert turn.item is not None and {r.rated_as for r in turn.item.responses} == {name, "sft"}
    stored = record_vote(state, turn.item, "tie", "bo")
    assert state.store.votes.list()[0].responses == stored.vote.responses


def test_a_fresh_policy_is_rated_sft_and_never_battles_sft(state: AppState, tiny_model_dir: Path) -> None:
    assert state.models.policy_is_sft and state.rated_name("policy") == "sft"
    assert dict((v, label) for label, v in slot_choices(state))["policy"] == FRESH_POLICY_LABEL
    with pytest.raises(PlaygroundError, match="needs two different models"):
        start_round(state, chat_messages("Hi?"), None, SAMPLED, 0.1)  # only the SFT weights are loaded
    stored = playground_vote(state, ["policy", "reference"])
    assert [r.rated_as for r in stored.vote.responses] == ["sft", "sft"]
    assert human_battles(state.store) == []  # SFT against itself tells the leaderboard nothing

    name = train(state)
    assert not state.models.policy_is_sft and state.rated_name("policy") == name
    assert dict((v, label) for label, v in slot_choices(state))["policy"] == "policy"
    # Restarted without the trained policy serving: the fresh adapter is SFT again, the checkpoint a slot.
    state.store.checkpoints.set_serving(None)
    state.store.close()
    restarted = build_state(ModelsConfig(sft=str(tiny_model_dir)), state.data_dir)
    try:
        assert restarted.models.policy_is_sft and name in restarted.checkpoints
        draws = [start_round(restarted, chat_messages("Hi?"), None, SAMPLED, 0.1, random.Random(s))
                 for s in range(30)]
        assert {frozenset(r.models) for r in draws} == {frozenset({"sft", name})}  # never policy vs sft/reference
        assert {restarted.rated_name(n) for r in draws for n in r.models} == {"sft", name}
        battle = playground_vote(restarted, None, "b", rng=1)
        assert battle.vote.anonymous and {r.rated_as for r in battle.vote.responses} == {"sft", name}
    finally:
        restarted.store.close()


def test_round_is_checked_before_generating(state: AppState) -> None:
    with pytest.raises(PlaygroundError, match="β must be > 0"):
        start_round(state, chat_messages("Hi?"), ["policy", "sft"], SAMPLED, 0.0)
    with pytest.raises(PlaygroundError, match="unknown model"):
        start_round(state, chat_messages("Hi?"), ["policy", "gpt-9"], SAMPLED, 0.1)


def test_the_example_set_loads_once(state: AppState) -> None:
    first = load_example_set(state)
    assert first.pset.name == EXAMPLE_SET and first.prompts == 16
    assert load_example_set(state).pset.id == first.pset.id  # a second click imports nothing
    assert [s.name for s in state.store.prompt_sets.list()] == [EXAMPLE_SET]


def new_checkpoints(state: AppState, seeds: list[int]) -> list[str]:
    """Checkpoints with random adapters, attached to the slots as a finished run's are; their ids."""
    names = []
    for seed in seeds:
        trainee = trainable_copy(state.models.policy.model)
        perturb_adapter(trainee, seed=seed)
        names.append(state.add_checkpoint(write_checkpoint(trainee, state.checkpoint_dir, {"engine": "test"})).name)
    return names


def test_checkpoints_published_mid_round_change_neither_its_rated_names_nor_its_kl_cells(
        state: AppState, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round starts while checkpoint a serves; b is published after the start but before the rows
    join (so b generates), c after they joined but before scoring. The vote rates the policy slot as b,
    and its text, sampled from b, is no sample of the π_θ serving when it is scored (c)."""
    a, b, c = new_checkpoints(state, [1, 2, 3])
    state.serve(a)
    submit = state.scheduler.submit

    def publish_then_submit(*args, **kwargs):  # a publish landing between the round's start and its submit
        monkeypatch.setattr(state.scheduler, "submit", submit)
        state.serve(b)
        return submit(*args, **kwargs)

    unbiased = replace(SAMPLED, max_new_tokens=12)
    rnd = start_round(state, chat_messages("Say hi."), ["policy", "sft"], unbiased, 0.1)
    monkeypatch.setattr(state.scheduler, "submit", publish_then_submit)
    steps = generate_round(state, rnd, "script")
    next(steps)  # the rows are pinned and decoding
    state.serve(c)
    *_, final = steps
    *_, b_alone = stream_generate(state.scheduler, [state.checkpoints[b]], list(rnd.messages), unbiased)
    assert final.weights[0] == state.checkpoints[b].ident and final.token_ids[0] == b_alone.token_ids[0]

    scored = score_generated(state, rnd, final)
    assert not scored.kl[0].from_policy and scored.kl[0].value is None  # sampled from b; c serves
    stored = record_vote(state, scored, "a", "ana")
    assert [r.rated_as for r in stored.vote.responses] == [b, "sft"]
    # Without a publish in between, the same cell is a sample of π_θ.
    again = start_round(state, chat_messages("Say hi."), ["policy", "sft"], unbiased, 0.1)
    *_, final = generate_round(state, again, "script")
    rescored = score_generated(state, again, final)
    assert rescored.kl[0].from_policy and rescored.rated_as == (c, "sft")


def test_pregenerated_and_judged_answers_are_rated_as_the_weights_that_generated_them(
        state: AppState, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pre-generation and judge runs name each answer by the weights its row was pinned to, also
    when a checkpoint is published between their choice of models and the rows joining."""
    from evals.judges import make_judge
    from service.evaluation import run_judge

    a, b = new_checkpoints(state, [1, 2])
    submit = state.scheduler.submit

    def serving(name: str) -> None:
        def publish_then_submit(*args, **kwargs):
            state.serve(name)
            return submit(*args, **kwargs)
        monkeypatch.setattr(state.scheduler, "submit", publish_then_submit)

    state.serve(a)
    pset = choose_models(state, state.store.prompt_sets.add(
        "eval", "test", [SetPrompt("q0", [{"role": "user", "content": "Say hi."}])]), ["policy", "sft"], SAMPLED)
    serving(b)
    assert pregenerate(state, pset).generated == 2
    prompt = state.store.prompt_sets.prompts(pset.id)[0]
    responses = state.store.prompt_sets.responses(prompt.id)
    assert {m: r.rated_as for m, r in responses.items()} == {"policy": b, "sft": "sft"}

    state.serve(a)
    battles = run_judge(state, [chat_messages("Say hi.")], ["policy", "sft"], make_judge("shorter", state.models),
                        SAMPLED)
    assert {battles[0].model_a, battles[0].model_b} == {b, "sft"}
