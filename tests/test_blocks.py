"""ui/blocks.py: new sessions share each component's configuration, under the tested Gradio only;
and `/generate` streams updates that Gradio postprocesses without rebuilding a component."""

import asyncio
import logging
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from gradio.blocks import BlocksConfig
from gradio.state_holder import SessionState

from service.state import AppState
from tests.conftest import SAMPLED
from ui import blocks
from ui.app import build_demo
from ui.blocks import TESTED_GRADIO, Blocks, app_blocks


@pytest.fixture
def generate_fn(tiny_state: AppState) -> tuple[Blocks, Any]:  # (the app, /generate's BlockFunction)
    demo = build_demo(tiny_state)
    assert isinstance(demo, Blocks)
    return demo, next(f for f in demo.fns.values() if f.api_name == "generate")


def test_every_streamed_update_of_generate_is_postprocessed_without_a_rebuild(generate_fn: tuple) -> None:
    """Gradio rebuilds, for the session, each output an update leaves out (~0.35 ms each): every
    update /generate yields names all of its outputs but the round's state, which costs nothing."""
    demo, fn = generate_fn
    shown = [b for b in fn.outputs if not b.stateful]
    assert len(fn.outputs) == 6 and len(shown) == 5  # the round, the status, 4 texts
    settings = {**SAMPLED, "max_new_tokens": 4}
    updates = list(fn.fn("Say hi.", "", 2, "Side by side", "policy", "reference", "sft", "sft", *settings.values(),
                         0.1, None))
    assert len(updates) >= 4  # started, streamed, scoring, scored
    session = SessionState(demo)
    for update in updates:
        assert set(shown) <= set(update)
        asyncio.run(gr.Blocks.postprocess_data(demo, fn, update, session))
        assert all(session[b._id] is b for b in shown)  # the app's own components: none rebuilt
    assert updates[-1][fn.outputs[1]].startswith("Vote below") and session[fn.outputs[0]._id].scores


def test_new_sessions_share_each_components_configuration(generate_fn: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    demo, fn = generate_fn
    computed: list[int] = []
    gradios = BlocksConfig.config_for_block

    def counting(_id: int, rendered_ids: list[int], block: Any, renderable: Any = None) -> dict:
        computed.append(_id)
        return gradios(_id, rendered_ids, block, renderable)

    monkeypatch.setattr(BlocksConfig, "config_for_block", staticmethod(counting))
    first = SessionState(demo)
    assert len(computed) == len(demo.blocks) > 300  # the first session computes them
    second = SessionState(demo)
    assert len(computed) == len(demo.blocks)  # the second one computes none
    for _id, block in demo.blocks.items():
        assert first.config_values[_id] == second.config_values[_id] == gradios(_id, [], block)

    text = next(b for b in fn.outputs if isinstance(b, gr.Textbox))
    first._update_value_in_config(text._id, "mine")  # what a session's update writes
    assert first.config_values[text._id]["props"]["value"] == "mine"
    assert second.config_values[text._id]["props"].get("value") != "mine"
    assert SessionState(demo).config_values[text._id]["props"].get("value") != "mine"
    # A component the session rebuilt (as Gradio does for an update) gets its own configuration.
    first[text._id] = gr.Textbox(value="rebuilt", render=False)
    first._update_config(text._id)
    assert first.config_values[text._id]["props"]["value"] == "rebuilt"
    assert SessionState(demo).config_values[text._id] == gradios(text._id, [], text)


def test_another_gradio_gets_plain_blocks_and_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=blocks.__name__):
        assert type(app_blocks()) is Blocks and not caplog.records
        monkeypatch.setattr(gr, "__version__", "6.32.0")
        plain = app_blocks()
    assert type(plain) is gr.Blocks and not isinstance(plain.default_config, blocks.SharedConfig)
    [warning] = caplog.records
    assert "Gradio 6.32.0 is not the tested 6.31.0" in warning.getMessage()


def test_the_tested_gradio_is_the_pinned_one() -> None:
    pins = (Path(__file__).resolve().parent.parent / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert f"gradio=={TESTED_GRADIO}" in pins and gr.__version__ == TESTED_GRADIO
