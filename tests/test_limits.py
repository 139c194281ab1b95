"""The engine's limits, reached through the API: a clear message, nothing stored, nothing run."""

from pathlib import Path

import pytest
from gradio_client import Client

from playground.core.limits import MAX_PROMPT_CHARS
from service.state import AppState
from tests.conftest import generate_call


@pytest.fixture
def app(tiny_app: tuple[AppState, Client]) -> tuple[AppState, Client]:
    return tiny_app


def test_limits_answer_through_the_api(app: tuple[AppState, Client], tmp_path: Path) -> None:
    from gradio_client import handle_file

    import playground.data.rows as rows

    state, client = app
    with pytest.raises(Exception, match=f"at most {MAX_PROMPT_CHARS} allowed"):
        client.predict(**generate_call("x" * (MAX_PROMPT_CHARS + 1)))
    with pytest.raises(Exception, match="greater than maximum value 1024"):  # the slider's bound, checked by Gradio
        client.predict(**generate_call("Hi", max_new_tokens=100_000))
    with pytest.raises(Exception, match=r"steps must be 1\.\.10000"):
        client.predict(1_000_000, 0.1, 5e-4, 2, "sigmoid", 0.0, 0.0, 0, api_name="/train")
    big = tmp_path / "big.jsonl"
    big.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n' * 10)
    rows.MAX_FILE_BYTES, saved = 100, rows.MAX_FILE_BYTES  # the engine's check, not only Gradio's
    try:
        with pytest.raises(Exception, match="files of at most"):
            client.predict(handle_file(str(big)), api_name="/import")
    finally:
        rows.MAX_FILE_BYTES = saved
    assert state.store.votes.list() == [] and state.store.imports.pairs() == [] and state.store.checkpoints.list() == []
