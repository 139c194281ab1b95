"""`gr.Blocks` whose partial updates cost only the components they name, and whose new sessions
do not recompute the configuration of every component.

A handler that returns or yields a dict names some of its outputs. Gradio fills in every other
output with an empty update, and for each one rebuilds the session's copy of that component from
its constructor arguments, signature inspection and config included. That costs ~0.35 ms per
component on these machines. `/generate` has 33 outputs and streams its 2–4 texts a few times a
second to each session. Measured on the server's event loop:
- one streamed update cost 10.9 ms, where 0.3 ms is needed for the texts it carries;
- at 20 voters this took ~40% of a core, and the GIL from the scheduler thread (evals.bench.load).

Here the named outputs go through Gradio's own postprocessing, and the others are sent as an
empty update without the rebuild. The session sees no difference: the rebuilt copy would have had
the same constructor arguments. What Gradio would refuse (keys that are not outputs, batched or
validator functions, a full dict) still takes Gradio's path, and its error.

A session's first event makes its `SessionState`, which computes the configuration of each of this
app's ~360 components (for deep links, which this app has none of): ~20 ms of the event loop per
new session. When 100 voters press Generate at once that is 2 s of work that pages wait behind
(a profile of `evals.bench.load`'s first seconds: two thirds of the event loop). Those
configurations are the same for every session until a session changes a component, so each is
computed once here and every session gets its own copy of the part it may change (`props`).

Both overrides sit on Gradio internals (`postprocess_data`, `BlocksConfig`) of the pinned version
(requirements.txt); `tests/test_blocks.py` compares their results with Gradio's own, so an upgrade
that changes those internals fails there first.
"""

import copy
from typing import Any

import gradio as gr
from gradio.blocks import Block, BlockFunction, BlocksConfig
from gradio.state_holder import SessionState

EMPTY_UPDATE = {"__type__": "update"}  # what the page reads as "leave this component as it is"


class Blocks(gr.Blocks):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_config = SharedConfig(self)  # before any component is added

    async def postprocess_data(self, block_fn: BlockFunction, predictions: list | dict,
                               state: SessionState | None) -> list[Any]:
        named = named_outputs(block_fn, predictions)
        if named is None:
            return await super().postprocess_data(block_fn, predictions, state)
        assert isinstance(predictions, dict)  # named_outputs says so
        part = copy.copy(block_fn)
        part.outputs = [block_fn.outputs[i] for i in named]
        values = [predictions[block] for block in part.outputs]
        # One output is a bare value to Gradio, more are a list in the outputs' order.
        done = dict(zip(named, await super().postprocess_data(part, values if len(values) > 1 else values[0], state),
                        strict=True))
        return [done[i] if i in done else (None if block.stateful else dict(EMPTY_UPDATE))
                for i, block in enumerate(block_fn.outputs)]


def named_outputs(block_fn: BlockFunction, predictions: Any) -> list[int] | None:
    """The indexes of the outputs a dict return names, in order, when it names some but not all
    of them; None where Gradio's own path must run."""
    if (not isinstance(predictions, dict) or not predictions or block_fn.batch or block_fn.is_validator_function
            or len(predictions) >= len(block_fn.outputs)):
        return None
    index = {id(block): i for i, block in enumerate(block_fn.outputs)}
    if not all(id(key) in index for key in predictions):
        return None
    return sorted(index[id(key)] for key in predictions)


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
