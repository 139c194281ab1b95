"""service.training: DPO runs from the stored votes (events, register, serve, one at a time, cancel,
nothing changed by a failed run) and reward models in their own folders."""

import ast
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from evals import dashboard
from playground.core.errors import PlaygroundError
from playground.models.checkpoints import CheckpointRecord
from playground.models.roles import adapter_params
from playground.training.dpo import DPOConfig
from playground.training.reward_model import RewardConfig
from service import training
from service.data import export_votes
from service.state import AppState
from tests.conftest import make_vote

FAST = DPOConfig(steps=3, lr=5e-3, batch_size=2)  # 6 votes: 5 train pairs, 1 held out


def served(state: AppState) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in adapter_params(state.models.policy.model).items()}


def assert_served_is(state: AppState, before: dict[str, torch.Tensor]) -> None:
    now = adapter_params(state.models.policy.model)
    assert all(torch.equal(now[n], p) for n, p in before.items())


@pytest.fixture
def state(tiny_state: AppState) -> AppState:
    """The tiny state with 6 votes, each for policy's short answer over sft's long wrong one."""
    for i in range(6):
        tiny_state.store.votes.add(make_vote(("policy", "sft"), texts=("Yes.", "No, a long wrong answer."),
                                             prompt=[{"role": "user", "content": f"Question {i}?"}]))
    return tiny_state


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """(stepped, proceed): the run's first step sets `stepped`, then waits for `proceed`."""
    stepped, proceed = threading.Event(), threading.Event()
    real = training.train_dpo

    def gated(*args, callback, **kwargs):
        def on_step(step: int, total: int, metrics: dict[str, float]) -> None:
            callback(step, total, metrics)
            if step == 1:
                stepped.set()
                assert proceed.wait(60)
        return real(*args, callback=on_step, **kwargs)

    monkeypatch.setattr(training, "train_dpo", gated)
    return stepped, proceed


def test_empty_checkpoint_table_keeps_its_headers(tiny_state: AppState) -> None:
    table = training.checkpoint_table(tiny_state)
    assert list(table.columns) == training.TRAIN_TABLE_COLUMNS and len(table) == 0
    assert training.checkpoint_records(tiny_state) == []


def test_a_run_streams_one_event_per_step_registers_and_serves(state: AppState) -> None:
    run = training.start_training(state, FAST)
    events = list(run.events())
    result = run.result(timeout=120)
    assert [(e.step, e.total) for e in events] == [(1, 3), (2, 3), (3, 3)]
    assert [e.metrics["loss"] for e in events] == [m["loss"] for m in result.steps]
    assert list(run.events()) == []  # drained: a second iteration ends at once
    name = result.checkpoint.name
    assert [c.id for c in state.store.checkpoints.list()] == [name] and name in state.checkpoints
    assert state.models.policy.source == str(result.checkpoint) and state.recorded_serving() == name
    assert not state.training.locked()

    [record] = training.checkpoint_records(state)
    assert isinstance(record, CheckpointRecord)
    assert (record.id, record.parent, record.pairs, record.steps, record.beta) == (name, None, 6, 3, 0.1)
    assert record.heldout_before.pairs == record.heldout_after.pairs == 1
    assert record.heldout_before.accuracy == 0.5 and record.created is not None
    [row] = training.checkpoint_table(state).to_dict("records")
    assert row["checkpoint"] == name and row["serving"] == "●" and row["parent"] == "SFT" and row["steps"] == 3
    # The Dashboard's table reads the same parsed record.
    [row] = dashboard.checkpoint_records(state.store, {}).to_dict("records")
    assert (row["checkpoint"], row["parent"], row["pairs"], row["steps"], row["β"]) == (name, "sft", 6, 3, 0.1)
    assert (row["held-out pairs"], row["held-out acc before"]) == (1, 0.5)
    assert row["held-out acc after"] == record.heldout_after.accuracy and row["created"] == record.created_local()


def test_merged_run_trains_on_one_vote_per_prompt(state: AppState) -> None:
    # Playground votes (no queue item) pass through a merge unchanged: the same 6 pairs.
    result = training.start_training(state, FAST, merge=True).result(timeout=120)
    assert result.pairs == 6 and result.checkpoint is not None


def test_bad_settings_start_nothing(state: AppState) -> None:
    with pytest.raises(PlaygroundError, match="β must be > 0"):
        training.start_training(state, DPOConfig(beta=0))
    assert not state.training.locked() and state.store.checkpoints.list() == []


def test_second_start_refused_and_cancel_changes_nothing(state: AppState,
                                                         gate: tuple[threading.Event, threading.Event]) -> None:
    stepped, proceed = gate
    before, source = served(state), state.models.policy.source
    run = training.start_training(state, DPOConfig(steps=10, lr=5e-3, batch_size=2))
    assert stepped.wait(60)
    with pytest.raises(PlaygroundError, match="already in progress"):
        training.start_training(state, FAST)
    with pytest.raises(PlaygroundError, match="already in progress"):
        training.train_reward_model(state, RewardConfig(steps=1))
    assert training.cancel_training(state)
    proceed.set()
    assert [e.step for e in run.events()] == [1]
    result = run.result(timeout=60)
    assert result.cancelled and result.checkpoint is None and len(result.steps) == 1
    assert state.store.checkpoints.list() == [] and not state.checkpoints
    assert not state.checkpoint_dir.exists() or not any(state.checkpoint_dir.iterdir())
    assert_served_is(state, before)
    assert state.models.policy.source == source
    assert not state.training.locked() and not training.cancel_training(state)

    again = training.start_training(state, FAST).result(timeout=120)  # the lock is free, the cancel forgotten
    assert not again.cancelled and state.models.policy.source == str(again.checkpoint)


def test_a_failure_to_register_puts_the_served_policy_back(state: AppState, monkeypatch: pytest.MonkeyPatch) -> None:
    before, source = served(state), state.models.policy.source

    def broken(folder: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(state, "add_checkpoint", broken)
    run = training.start_training(state, FAST)
    assert len(list(run.events())) == 3
    with pytest.raises(PlaygroundError, match="training failed: OSError: disk full"):
        run.result(timeout=60)
    assert_served_is(state, before)
    assert state.models.policy.source == source
    assert not any(state.checkpoint_dir.iterdir()) and state.recorded_serving() is None
    assert not state.training.locked()


def test_reward_models_back_to_back_get_their_own_folders(state: AppState) -> None:
    steps: list[int] = []
    first = training.train_reward_model(state, RewardConfig(steps=2), lambda step, total, m: steps.append(step))
    second = training.train_reward_model(state, RewardConfig(steps=1))
    assert steps == [1, 2] and len(first.steps) == 2 and first.train_pairs == 5
    assert first.folder != second.folder
    assert training.reward_model_folders(state) == sorted([first.folder, second.folder])
    assert all(f.parent == training.reward_model_dir(state) == state.data_dir / "reward-models"
               for f in (first.folder, second.folder))
    assert training.reward_models(state) == [f.name for f in training.reward_model_folders(state)]
    assert first.heldout_before.accuracy == 0.5 and not state.training.locked()


def test_reward_model_folders_never_collide_within_one_second(state: AppState,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = time.gmtime(0)
    monkeypatch.setattr(training.time, "gmtime", lambda *args: frozen)
    names = {training.new_reward_model_folder(state).name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith("rm-19700101-000000-") for n in names)


def test_cancel_stops_a_reward_model_and_saves_nothing(state: AppState) -> None:
    def cancel_at_first_step(step: int, total: int, metrics: dict[str, float]) -> None:
        assert training.cancel_training(state)  # the run holds the lock while it trains

    with pytest.raises(PlaygroundError, match="cancelled after 1 steps; nothing was saved"):
        training.train_reward_model(state, RewardConfig(steps=3), cancel_at_first_step)
    assert training.reward_model_folders(state) == [] and not state.training.locked()
    assert not training.reward_model_dir(state).exists() or not any(training.reward_model_dir(state).iterdir())
    assert len(training.train_reward_model(state, RewardConfig(steps=1)).steps) == 1  # the cancel is forgotten


def test_the_application_layer_imports_no_gradio() -> None:
    # A script or gradio_client user calls the functions the tabs call; none of them needs a UI.
    for path in sorted(Path(training.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in imported if m.split(".")[0] in ("gradio", "gradio_client", "ui")}, path.name


def test_training_and_exports_leave_out_or_mark_the_votes_the_cleaning_rules_flag(state: AppState) -> None:
    """Two anonymous votes whose answer names the model ("I am SmolLM") are flagged: a run trains
    on the other six pairs and says how many it left out; with clean=False it takes all eight; the
    exported rows carry each vote's flags."""
    for i in range(2):
        state.store.votes.add(make_vote(("policy", "sft"), texts=(f"I am SmolLM {i}.", "No."), anonymous=True,
                                        prompt=[{"role": "user", "content": f"Who are you {i}?"}]))
    run = training.start_training(state, FAST)
    result = run.result(timeout=300)
    assert run.left_out == 2 and result.pairs == 6
    assert training.start_training(state, FAST, clean=False).result(timeout=300).pairs == 8
    rows = [json.loads(line) for line in export_votes(state, "trl").path.read_text().splitlines()]
    assert [r["flags"] for r in rows] == [[]] * 6 + [["identity:smollm"]] * 2
