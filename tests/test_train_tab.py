"""Training from the page: votes in, a checkpoint out, hot-swapped into serving and the pickers."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from playground.data.rows import parse_row
from playground.models.roles import ModelsConfig, adapter_params
from service.state import AppState, build_state
from tests.conftest import running_app

PAIRS = [
    {"prompt": [{"role": "user", "content": f"Question {i}?"}],
     "chosen": [{"role": "assistant", "content": "Yes."}],
     "rejected": [{"role": "assistant", "content": "No, the answer is long and wrong."}]}
    for i in range(6)
]
# steps, β, lr, pairs per step, loss, ε, held-out fraction, seed
TRAIN = (3, 0.1, 5e-3, 2, "sigmoid", 0.0, 0.2, 0)


@pytest.fixture
def app(tiny_state: AppState) -> Iterator[tuple[AppState, Client]]:
    tiny_state.store.imports.add_pairs([parse_row(p, i + 1) for i, p in enumerate(PAIRS)], "pairs.jsonl")
    with running_app(tiny_state) as client:
        yield tiny_state, client


def test_train_publishes_registers_and_serves_checkpoints(app: tuple[AppState, Client], home: Path,
                                                          tiny_model_dir: Path) -> None:
    state, client = app
    before = {n: p.detach().clone() for n, p in adapter_params(state.models.policy.model).items()}
    job = client.submit(*TRAIN, api_name="/train")
    job.result(timeout=300)
    final = job.outputs()[-1]
    assert "is now serving as `policy`" in final[1]
    [ckpt] = state.store.checkpoints.list()
    folder = ckpt.path
    assert folder.parent == home / "checkpoints" and (folder / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "record.json").read_text())["pairs"]["count"] == 6
    assert state.models.policy.source == str(folder)
    after = adapter_params(state.models.policy.model)
    assert any(not (after[n] == before[n]).all() for n in before)  # the served adapter changed
    assert ckpt.id in state.slot_catalog()  # selectable in the response slots

    # A second run from the new policy, then one click serves the first checkpoint again.
    client.submit(*TRAIN, api_name="/train").result(timeout=300)
    assert len(state.store.checkpoints.list()) == 2
    assert state.store.checkpoints.list()[1].parent == ckpt.id
    client.predict(ckpt.id, api_name="/serve_checkpoint")
    assert state.models.policy.source == str(folder)
    served = adapter_params(state.models.policy.model)
    first = adapter_params(state.checkpoints[ckpt.id].model)
    for n, p in served.items():
        assert (p == dict(first)[n]).all()

    # A restart finds both checkpoints and lists them again.
    state2 = build_state(ModelsConfig(sft=str(tiny_model_dir)), home)
    assert set(state2.checkpoints) == {c.id for c in state.store.checkpoints.list()}
    state2.store.close()


def test_bad_settings_are_refused_and_nothing_changes(app: tuple[AppState, Client]) -> None:
    state, client = app
    with pytest.raises(Exception, match="minimum value"):  # the widget's own bound
        client.predict(3, 0.0, 5e-3, 2, "sigmoid", 0.0, 0.2, 0, api_name="/train")
    with pytest.raises(Exception, match="learning rate must be > 0"):  # the engine's check
        client.predict(3, 0.1, 0.0, 2, "sigmoid", 0.0, 0.2, 0, api_name="/train")
    with pytest.raises(Exception, match="KTO desirable and undesirable weights must be > 0"):
        client.predict(3, 0.1, 5e-3, 2, "kto", 0.0, 0.2, 0, False, 0.5, 0.1, 0.0, 1.0, api_name="/train")
    with pytest.raises(Exception, match="KTO needs a batch size ≥ 2"):
        client.predict(3, 0.1, 5e-3, 1, "kto", 0.0, 0.2, 0, api_name="/train")
    assert state.store.checkpoints.list() == []
    assert not state.training.locked()


def test_a_second_run_while_one_trains_is_refused(app: tuple[AppState, Client]) -> None:
    state, client = app
    # Holding the lock stands in for a run in progress.
    with state.training, pytest.raises(Exception, match="already in progress"):
        client.predict(*TRAIN, api_name="/train")
    assert state.store.checkpoints.list() == []


def test_before_any_run_the_plot_and_table_say_what_they_will_show(tiny_app: tuple[AppState, Client]) -> None:
    from service.training import NO_CHECKPOINTS, TRAIN_TABLE_COLUMNS, checkpoint_table
    from ui.train_tab import NO_RUN, PLOT_TITLE, metrics_figure

    state, client = tiny_app
    fig = metrics_figure([])
    assert fig.layout.title.text == PLOT_TITLE
    assert [a.text.replace("<br>", " ") for a in fig.layout.annotations] == [NO_RUN]  # wrapped to fit
    assert list(checkpoint_table(state).columns) == TRAIN_TABLE_COLUMNS and "Train" in NO_CHECKPOINTS
    assert client.predict(api_name="/cancel_training") == "No training is running."


def test_kto_trains_on_the_single_votes_and_simpo_says_it_is_reference_free(app: tuple[AppState, Client]) -> None:
    from playground.data.single_votes import SingleVote
    from playground.data.votes import Response
    from service.training import checkpoint_table
    from ui.train_tab import metrics_figure

    state, client = app
    for i, (text, label) in enumerate([("Yes.", True), ("No, a long and wrong answer.", False), ("Sure.", True)]):
        state.store.single_votes.add(SingleVote(prompt=PAIRS[i]["prompt"], response=Response("policy", text),
                                                label=label, slot=0, voter="ana"))
    # steps, β, lr, batch, loss, ε, held-out, seed, merge, γ, ORPO λ, λ_D, λ_U (ε and γ belong to other losses:
    # hidden on the page, and not this run's settings)
    job = client.submit(3, 0.1, 5e-3, 2, "kto", 0.3, 0.2, 0, False, 9.0, 0.1, 1.5, 1.0, api_name="/train")
    job.result(timeout=300)
    assert "and 3 unpaired rows" in job.outputs()[-1][1]
    kto = json.loads((state.store.checkpoints.list()[0].path / "record.json").read_text())
    assert kto["unpaired"]["count"] == 3 and kto["hyperparameters"]["kto_desirable_weight"] == 1.5
    assert kto["hyperparameters"]["label_smoothing"] == 0.0 and kto["reference_free"] is False
    assert all("kl" in step for step in kto["steps"])  # KTO's reference point z₀, logged per step
    names = {t.name for t in metrics_figure(kto["steps"], "kto").data}
    assert "KL reference point z₀" in names and "reward accuracy" not in names  # KTO has no pairs in a step

    job = client.submit(2, 2.0, 5e-3, 2, "simpo", 0.0, 0.2, 0, False, 0.7, 0.1, 1.0, 1.0, api_name="/train")
    job.result(timeout=300)
    assert "(trained reference-free)" in job.outputs()[-1][1]
    simpo = json.loads((state.store.checkpoints.list()[1].path / "record.json").read_text())
    assert simpo["reference_free"] is True and simpo["hyperparameters"]["simpo_gamma"] == 0.7
    assert simpo["unpaired"]["count"] == 0  # the single votes train KTO only
    assert list(checkpoint_table(state)["loss"]) == ["simpo (reference-free)", "kto"]


def test_rlhf_from_the_train_tab(app: tuple[AppState, Client]) -> None:
    from service.training import checkpoint_table
    from ui.rlhf_panel import rlhf_figure

    state, client = app
    with pytest.raises(Exception, match="Choose a prompt set"):
        client.predict("", "", "rloo", api_name="/train_rlhf")
    client.predict(api_name="/load_example_set")
    _, rm, _ = client.predict(4, 1e-3, 0.0, api_name="/train_reward_model")  # on the imported pairs
    # prompt set, reward model, method, steps, β, lr, K, prompts per step, max new tokens, clip, KL target,
    # held-out, seed (the PPO-only settings keep their defaults)
    job = client.submit("example", rm["value"], "rloo", 2, 0.05, 1e-3, 2, 2, 4, 0.2, 0, 0.2, 0,
                        api_name="/train_rlhf")
    job.result(timeout=300)
    final = job.outputs()[-1][1]
    assert "Trained 2 steps on" in final and "is now serving as `policy`" in final
    [ckpt] = state.store.checkpoints.list()
    record = json.loads((ckpt.path / "record.json").read_text())
    assert record["method"] == "rloo" and record["reward_model"] and len(record["steps"]) == 2
    assert state.models.policy.source == str(ckpt.path)  # serving
    assert list(checkpoint_table(state)["loss"]) == ["rloo"]
    names = {t.name for t in rlhf_figure(record["steps"], "rloo").data}
    assert {"reward r_φ", "KL (nats)", "entropy (nats/token)", "clip fraction"} <= names
    assert "value loss (PPO)" not in names  # RLOO has no value head
    with pytest.raises(Exception, match="samples per prompt must be ≥ 2"):
        client.predict("example", rm["value"], "grpo", 2, 0.05, 1e-3, 1, 2, 4, 0.2, 0, 0.2, 0, api_name="/train_rlhf")
    assert len(state.store.checkpoints.list()) == 1 and not state.training.locked()
