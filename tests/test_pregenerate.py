"""Pre-generation on the tiny model: stopped, crashed and resumed, every response exists exactly once."""

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import service.pregenerate as pregenerate_module
from cli.data import build_parser
from playground.core.errors import PlaygroundError
from playground.data.prompt_sets import PromptSet, SetPrompt
from playground.data.queue import next_item, queue_vote
from playground.inference.generation import Generation
from playground.inference.settings import GenerationSettings
from service.pregenerate import choose_models, pregenerate
from service.state import AppState

MODELS = ["policy", "sft"]
# Sampled: the random tiny model's greedy text is whitespace.
SETTINGS = GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4, seed=3)


@pytest.fixture
def state(tiny_state: AppState) -> AppState:
    return tiny_state


def new_set(state: AppState, name: str, n: int = 5) -> PromptSet:
    prompts = [SetPrompt(f"q{i}", [{"role": "user", "content": f"Say hi {i}."}]) for i in range(n)]
    return choose_models(state, state.store.add_prompt_set(name, "test", prompts), MODELS, SETTINGS)


def stored(state: AppState) -> list[tuple[str, str, str]]:
    """(set, ref, model) of every stored response, by set name and ref."""
    db = sqlite3.connect(state.store.path)
    rows = db.execute("SELECT s.name, p.ref, r.model FROM set_responses r JOIN set_prompts p ON p.id = r.prompt_id "
                      "JOIN prompt_sets s ON s.id = p.set_id ORDER BY s.name, p.ref, r.model").fetchall()
    db.close()
    return rows


def texts(state: AppState, pset: PromptSet) -> dict[tuple[str, str], str]:
    return {(p.ref, m): r.text for p in state.store.set_prompts(pset.id)
            for m, r in state.store.set_responses(p.id or 0).items()}


def test_stopped_crashed_and_resumed_gives_every_response_once(state: AppState,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pset = new_set(state, "eval")
    seen: list[tuple[int, int]] = []
    result = pregenerate(state, pset, on_progress=lambda d, t: seen.append((d, t)),
                         should_stop=lambda: seen[-1][0] >= 2)
    assert result.stopped and (result.prompts, result.already, result.generated) == (5, 0, 4)
    assert seen == [(0, 5), (1, 5), (2, 5)]

    real_generate = pregenerate_module.stream_generate

    def crash_on_q3(*args: Any) -> Iterator[Generation]:  # stream_generate's: scheduler, slots, messages, settings
        if args[2][-1]["content"] == "Say hi 3.":
            raise PlaygroundError("generation failed: the machine went away")
        return real_generate(*args)

    monkeypatch.setattr(pregenerate_module, "stream_generate", crash_on_q3)
    with pytest.raises(PlaygroundError, match="went away"):
        pregenerate(state, pset)
    assert [ref for _, ref, _ in stored(state)] == ["q0", "q0", "q1", "q1", "q2", "q2"]  # q3 lost, q0-q2 kept

    resumed: list[str] = []

    def counting(*args: Any) -> Iterator[Generation]:
        resumed.append(args[2][-1]["content"])
        return real_generate(*args)

    monkeypatch.setattr(pregenerate_module, "stream_generate", counting)
    result = pregenerate(state, pset)
    assert not result.stopped and (result.already, result.generated) == (3, 4)
    assert resumed == ["Say hi 3.", "Say hi 4."]  # one batched call per prompt still lacking responses
    assert stored(state) == [("eval", f"q{i}", m) for i in range(5) for m in ("policy", "sft")]
    assert pregenerate(state, pset).generated == 0  # nothing left: nothing generated

    # Seeds are per prompt: an uninterrupted run of the same prompts writes the same texts.
    again = new_set(state, "again")
    pregenerate(state, again)
    assert texts(state, again) == texts(state, pset) and any(t.strip() for t in texts(state, pset).values())
    response = state.store.set_responses(state.store.set_prompts(pset.id)[0].id or 0)["policy"]
    assert response.settings["batch"] == MODELS and response.settings["max_new_tokens"] == 4
    assert response.scores["reward"] == 0.0  # a fresh adapter: policy = reference


def test_models_are_fixed_once_a_set_has_votes(state: AppState) -> None:
    pset = new_set(state, "eval", n=1)
    with pytest.raises(PlaygroundError, match="choose 2 to 4 models"):
        choose_models(state, pset, ["policy"], SETTINGS)
    with pytest.raises(PlaygroundError, match="unknown model"):
        choose_models(state, pset, ["policy", "gpt-9"], SETTINGS)
    pregenerate(state, pset)
    item = next_item(state.store, pset, "ana", random.Random(0))
    assert item is not None
    state.store.add_queue_vote(queue_vote(item, "a", "ana"))
    with pytest.raises(PlaygroundError, match="cannot change"):
        choose_models(state, pset, ["policy", "reference"], SETTINGS)
    choose_models(state, pset, MODELS, GenerationSettings(max_new_tokens=8))  # settings may change


def test_cli_resumes_a_set(state: AppState, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pset = new_set(state, "eval", n=3)
    pregenerate(state, pset, should_stop=lambda: True)  # stopped before the first prompt
    assert stored(state) == []
    args = build_parser().parse_args(["pregenerate", "--set", "eval", "--sft", str(tiny_model_dir),
                                      "--db", str(state.store.path)])
    args.run(args)
    assert "6 responses generated from policy, sft; 3 prompts, 0 were already done" in capsys.readouterr().out
    assert len(stored(state)) == 6
