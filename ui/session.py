"""Who is asking: the login behind a request, the admin check and the voter name, for every tab."""

import gradio as gr

from service.state import AppState


def username(request: gr.Request | None) -> str | None:
    """The login name, or None when logins are off (or the call came without a request)."""
    return getattr(request, "username", None) if request is not None else None


def require_admin(state: AppState, request: gr.Request | None, action: str) -> None:
    """Raise `PlaygroundError` (shown as an error) unless the caller may do admin work."""
    state.access.require_admin(username(request), action)


def voter(state: AppState, request: gr.Request | None, typed: str) -> str:
    """The name a vote is stored under: the login when logins are on, else what was typed."""
    return state.access.voter(username(request), typed)
