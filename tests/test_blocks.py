"""ui/blocks.py: a partial update is postprocessed as Gradio would, without rebuilding the
components it does not name."""

import asyncio
from typing import Any

import gradio as gr
import pytest
from gradio.blocks import BlocksConfig
from gradio.state_holder import SessionState

from service.state import AppState
from ui.app import build_demo
from ui.blocks import EMPTY_UPDATE, Blocks


@pytest.fixture
def generate_fn(tiny_state: AppState) -> tuple[Blocks, Any]:  # (the app, /generate's BlockFunction)
    demo = build_demo(tiny_state)
    assert isinstance(demo, Blocks)
    return demo, next(f for f in demo.fns.values() if f.api_name == "generate")


def postprocess(demo: Blocks, fn: Any, predictions: Any, ours: bool) -> tuple[list[Any], SessionState]:
    """The wire data of `predictions` under ours or Gradio's own postprocessing, and the session after."""
    session = SessionState(demo)
    method = Blocks.postprocess_data if ours else gr.Blocks.postprocess_data
    return asyncio.run(method(demo, fn, predictions, session)), session


def test_a_streamed_update_sends_what_gradio_sends_without_rebuilding_the_rest(generate_fn: tuple) -> None:
    demo, fn = generate_fn
    texts = [b for b in fn.outputs if isinstance(b, gr.Textbox)]
    update = {texts[0]: "Hello", texts[1]: "Hi there"}  # what /generate yields while it streams
    ours, ours_session = postprocess(demo, fn, dict(update), ours=True)
    gradios, gradios_session = postprocess(demo, fn, dict(update), ours=False)

    assert len(ours) == len(fn.outputs) == 33
    for block, mine, theirs in zip(fn.outputs, ours, gradios, strict=True):
        if block in update:
            assert mine == theirs and mine in ("Hello", "Hi there")
        elif isinstance(block, gr.State):
            assert mine is theirs is None
        else:  # the page leaves it as it is (Gradio wraps an HTML's in "props")
            assert mine == EMPTY_UPDATE and theirs["__type__"] == "update"
            assert set(theirs) - {"props", "__type__"} == set()
    # Gradio rebuilt all 30 untouched components (33 less 2 texts and the State) for the session;
    # here they stay the app's own.
    untouched = [b for b in fn.outputs if b not in update and not b.stateful]
    assert sum(gradios_session[b._id] is not b for b in untouched) == 30
    assert all(ours_session[b._id] is b for b in untouched)
    # The named texts' values reach the session's config (a reload shows them) in both.
    for session in (ours_session, gradios_session):
        assert session.config_values[texts[0]._id]["props"]["value"] == "Hello"


def test_full_and_invalid_returns_take_gradios_path(generate_fn: tuple) -> None:
    demo, fn = generate_fn
    full = ["Generating…" if isinstance(b, gr.Markdown) else gr.skip() for b in fn.outputs]
    assert postprocess(demo, fn, list(full), ours=True)[0] == postprocess(demo, fn, list(full), ours=False)[0]
    stranger = gr.Textbox(render=False)  # not an output of /generate
    for ours in (True, False):
        with pytest.raises(ValueError, match="Returned component"):
            postprocess(demo, fn, {fn.outputs[7]: "a", stranger: "b"}, ours)


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
