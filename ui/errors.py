"""Engine errors shown as Gradio error toasts (and API errors) instead of tracebacks."""

import functools
import inspect
from collections.abc import Callable

import gradio as gr

from playground.core.errors import PlaygroundError


def user_errors(fn: Callable) -> Callable:
    """Turn a `PlaygroundError` raised by `fn` (plain or generator) into `gr.Error`."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except PlaygroundError as exc:
                raise gr.Error(str(exc)) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
    return wrapper
