"""Errors shown as Gradio error toasts (and API errors) instead of tracebacks or a bare "Error"."""

import functools
import inspect
import logging
from collections.abc import Callable

import gradio as gr

from playground.core.errors import PlaygroundError

log = logging.getLogger(__name__)


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


def user_errors(fn: Callable) -> Callable:
    """Raise every exception of `fn` (plain or generator) as the `gr.Error` of `shown`."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise shown(exc) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise shown(exc) from None
    return wrapper
