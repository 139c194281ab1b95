"""The playground driven through gradio_client exactly as the page drives it."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from playground.app_state import AppState, build_state
from playground.generation import GenerationSettings, generate
from playground.models import ModelsConfig
from ui.app import build_demo, launch_kwargs

# prompt, system, k, mode, 4 slot models, temperature, top-p, top-k, max new tokens, repetition, seed, β
SETTINGS = (0.0, 0.9, 50, 6, 1.0, 0, 0.1)


@pytest.fixture
def app(tiny_model_dir: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[tuple[AppState, Client]]:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), home)
    demo = build_demo(state)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs())
    client = Client(demo.local_url, verbose=False)
    yield state, client
    client.close()
    demo.close()
    state.store.close()


def test_generate_streams_the_engines_reply_then_a_vote_is_stored(app: tuple[AppState, Client]) -> None:
    state, client = app
    job = client.submit("Say hi.", "", 2, "Side by side", "policy", "reference", "sft", "policy", *SETTINGS,
                        api_name="/generate")
    job.result(timeout=120)
    updates = job.outputs()
    assert len(updates) >= 3  # streamed: a start, token steps, the scored end
    expected = generate(state.models, [state.models.policy, state.models.reference],
                        [{"role": "user", "content": "Say hi."}], GenerationSettings(temperature=0, max_new_tokens=6))
    final = updates[-1]  # status, preferences, 4 headers, 4 texts, … (state is not part of the API)
    assert list(final[6:8]) == expected
    assert "P(row ≻ column)" in final[1]

    result = client.predict("b", [], "ana", api_name="/vote")
    assert "stored" in str(result)
    [vote] = state.store.votes()
    assert vote.outcome == "b" and vote.voter == "ana"
    assert [r.model for r in vote.responses] == ["policy", "reference"]
    assert [r.text for r in vote.responses] == expected
    assert vote.responses[0].scores["reward"] == 0.0  # fresh adapter: policy = reference
    assert vote.settings["seed"] == 0 and vote.settings["beta"] == 0.1

    with pytest.raises(Exception, match="already has a vote"):
        client.predict("a", [], "ana", api_name="/vote")
    db = sqlite3.connect(state.store.path)
    assert db.execute("SELECT COUNT(*) FROM votes").fetchone() == (1,)
