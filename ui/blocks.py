"""`gr.Blocks` whose new sessions do not recompute the configuration of every component, used
only with the Gradio version it was tested against.

A session's first event makes its `SessionState`, which computes the configuration of each of this
app's ~360 components (for deep links, which this app has none of): ~20 ms of the event loop per
new session. When 100 voters press Generate at once that is 2 s of work that pages wait behind
(a profile of `bench.load`'s first seconds: two thirds of the event loop). Those configurations are
the same for every session until a session changes a component, so each is computed once here and
every session gets its own copy of the part it may change (`props`).

This sits on a Gradio internal (`BlocksConfig.config_for_block`) of the pinned version
(`TESTED_GRADIO`, the pin in requirements.txt); `tests/test_blocks.py` compares its result with
Gradio's own. Under any other Gradio, `app_blocks` gives plain `gr.Blocks` and a warning: slower
new sessions under load, rather than an override of code it was never tested against.

(An earlier override of `Blocks.postprocess_data` made partial updates cheap: Gradio rebuilds every
output a dict return leaves out, ~0.35 ms each, and `/generate` streamed 2 texts into 33 outputs.
`/generate` now has only the status and the texts as outputs and names all of them in each update,
so Gradio's own path costs what the texts cost; see `ui.playground_tab`.)
"""

import logging
from typing import Any

import gradio as gr
from gradio.blocks import Block, BlocksConfig

log = logging.getLogger(__name__)

TESTED_GRADIO = "6.31.0"  # requirements.txt pins it; tests/test_blocks.py checks the two agree


def app_blocks(**kwargs: Any) -> gr.Blocks:
    """The app's Blocks: `Blocks` under the tested Gradio, else plain `gr.Blocks` with a warning."""
    if gr.__version__ != TESTED_GRADIO:
        log.warning("Gradio %s is not the tested %s (requirements.txt): serving with plain gr.Blocks, without "
                    "the shared component configurations (new sessions cost more under load)",
                    gr.__version__, TESTED_GRADIO)
        return gr.Blocks(**kwargs)
    return Blocks(**kwargs)


class Blocks(gr.Blocks):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_config = SharedConfig(self)  # before any component is added


class SharedConfig(BlocksConfig):
    """The app's `BlocksConfig`: each of its own components' configuration computed once."""

    def __init__(self, root_block: gr.Blocks) -> None:
        super().__init__(root_block)
        self._made: dict[int, tuple[Block, dict]] = {}  # id -> (the app's component, its configuration)

    def __copy__(self) -> "SharedConfig":  # a session's copy shares what was computed
        new = super().__copy__()
        new.__class__ = SharedConfig
        new._made = self._made
        return new

    def config_for_block(self, _id: int, rendered_ids: list[int], block: Block, renderable: Any = None) -> dict:
        if renderable is not None or rendered_ids or self.root_block.blocks.get(_id) is not block:
            return BlocksConfig.config_for_block(_id, rendered_ids, block, renderable)  # a session's own component
        made = self._made.get(_id)
        if made is None or made[0] is not block:
            made = self._made[_id] = (block, BlocksConfig.config_for_block(_id, rendered_ids, block))
        config = made[1]
        return {**config, "props": dict(config["props"])}  # a session writes its values into props
