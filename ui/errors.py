"""Refused actions: one message, and the page left as it was.

A handler refuses with `PlaygroundError` (the engine's: a bad setting, a vote on nothing, a missing
admin role) or `gr.Error` (a check of the page's own). Raised out of a handler, Gradio 6 shows the
message in a toast and also marks every output of the event with a red "Error" badge: one refused
vote covered the responses, the score tables and the status line. `refusals` catches them:

- on the page: the message as one `gr.Warning` toast, and `gr.skip()` for every output, so what was
  on screen stays (responses, scores, typed text). Gradio delivers a toast only to a queued event
  (`queue=False` prints it on the server instead), so events whose handler may refuse stay queued;
- for an API client: the `gr.Error`, so a script gets an exception with the message. gradio_client
  sends `x-gradio-user: api` and Gradio's MCP server `mcp` (Gradio added the header so that errors can
  be shown by who asked). A raw HTTP caller without it is answered as the page: the warning comes in
  the event stream, and the outputs are left unchanged.

Anything else is a bug, not a refusal: logged with its traceback and raised as `gr.Error` with one
line, `Type: message`, on both paths (there the badges rightly say the outputs may be stale).
"""

import functools
import html
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from playground.core.errors import PlaygroundError

log = logging.getLogger(__name__)

API_CALLERS = frozenset({"api", "mcp"})  # values of the x-gradio-user header


def shown(exc: Exception) -> gr.Error:
    """The error a person sees: an engine error's own message; anything unexpected as one line,
    `Type: message`, its traceback going to the server's log."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, PlaygroundError):
        return gr.Error(str(exc))
    log.error("unexpected error in a request", exc_info=exc)
    first = str(exc).strip().splitlines()
    return gr.Error(f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__)


def from_api(request: gr.Request | None) -> bool:
    """Whether the call came from an API client rather than the page."""
    headers = getattr(request, "headers", None) or {}
    return headers.get("x-gradio-user") in API_CALLERS


def refused(exc: Exception, request: gr.Request | None) -> dict:
    """What a handler answers in place of raising `exc`: on the page, a warning toast and no change
    (`gr.skip()`) for a refusal; otherwise `exc` is raised as the `gr.Error` of `shown`."""
    error = shown(exc)
    if not isinstance(exc, PlaygroundError | gr.Error) or from_api(request):
        raise error from None
    gr.Warning(html.escape(error.message, quote=False))  # the toast renders HTML; a message may quote input
    return gr.skip()


def refusals(fn: Callable) -> Callable:
    """`fn` (plain or generator) with its exceptions answered by `refused`. `fn` takes a `gr.Request`
    (the page and an API client are answered differently); a generator that refuses after it began
    ends there, its earlier updates kept."""
    if not any(p.annotation is gr.Request for p in inspect.signature(fn).parameters.values()):
        raise TypeError(f"{fn.__name__} needs a `request: gr.Request` parameter to be wrapped by refusals")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                yield refused(exc, _request(args, kwargs))
        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            return refused(exc, _request(args, kwargs))
    return call


def _request(args: tuple, kwargs: dict) -> gr.Request | None:
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
