"""ui/errors.py: a refused action is one warning on the page (outputs left as they were) and an
error for an API client; anything unexpected is an error for both, shown as its type and first line."""

from collections.abc import Iterator

import gradio as gr
import pytest

from playground.core.errors import PlaygroundError
from ui import errors
from ui.errors import refusals

PAGE = gr.Request()  # the page sends no x-gradio-user header
API = gr.Request(headers={"x-gradio-user": "api"})  # what gradio_client sends


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    shown: list[str] = []
    monkeypatch.setattr(errors.gr, "Warning", shown.append)
    return shown


@refusals
def refuse(exc: Exception, request: gr.Request) -> str:
    raise exc


@refusals
def refuse_later(exc: Exception, request: gr.Request) -> Iterator[str]:
    yield "first"
    raise exc


def test_a_refusal_is_one_warning_on_the_page_and_leaves_the_outputs(warnings: list[str]) -> None:
    for exc in (PlaygroundError("the voter name is <empty>"), gr.Error("Choose a file")):
        assert refuse(exc, PAGE) == gr.skip()
        assert list(refuse_later(exc, request=PAGE)) == ["first", gr.skip()]  # what was streamed stays
    # The toast renders HTML: a message quoting input is escaped.
    assert warnings == ["the voter name is &lt;empty&gt;"] * 2 + ["Choose a file"] * 2


def test_an_api_client_gets_the_error(warnings: list[str]) -> None:
    for exc, message in ((PlaygroundError("no votes"), "no votes"), (gr.Error("Choose a file"), "Choose a file")):
        with pytest.raises(gr.Error) as plain:
            refuse(exc, API)
        with pytest.raises(gr.Error) as streamed:
            list(refuse_later(exc, API))
        assert plain.value.message == streamed.value.message == message
    assert warnings == []
    assert errors.from_api(gr.Request(headers={"x-gradio-user": "mcp"})) and not errors.from_api(None)


def test_an_unexpected_error_is_shown_as_its_type_and_first_line_to_everyone(warnings: list[str]) -> None:
    for request in (PAGE, API):
        shown = []
        for exc in (KeyError("leaderboard"), OSError("disk full\nmore detail"), ValueError()):
            with pytest.raises(gr.Error) as plain:
                refuse(exc, request)
            with pytest.raises(gr.Error) as streamed:
                list(refuse_later(exc, request))
            assert plain.value.message == streamed.value.message
            shown.append(plain.value.message)
        assert shown == ["KeyError: 'leaderboard'", "OSError: disk full", "ValueError"]
    assert warnings == []


def test_a_handler_without_a_request_cannot_be_wrapped() -> None:
    def blind(x: str) -> str:
        return x

    with pytest.raises(TypeError, match=r"blind needs a `request: gr\.Request` parameter"):
        refusals(blind)
