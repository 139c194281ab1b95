"""The one "Your name" box above the tabs: every tab's vote, rating and undo read it.

Without logins each browser gets a guest name (`service.voters`) on its first visit, kept in the
browser's storage (`gr.BrowserState`) and editable: whatever it holds when the page is opened
again is the name. With logins the box shows the login name, which is what votes are stored under
(`ui.session.voter`), and cannot be edited.
"""

import gradio as gr

from service import voters
from service.state import AppState
from ui import session

STORAGE_KEY = "preference-playground-voter"
# BrowserState encrypts what it keeps with this key, which every page receives in its config: it
# protects nothing (a display name), but a fixed key lets a browser read its name back after the
# server restarts and from every replica. Gradio's default, a random key per start, would not.
STORAGE_SECRET = "preference-playground-voter-name"


def build_voter_box(state: AppState, demo: gr.Blocks) -> gr.Textbox:
    """The name box (elem_id `voter`), filled in when `demo` loads, and kept as it is typed."""
    box = gr.Textbox(label="Your name", placeholder="the name your votes are stored under", elem_id="voter",
                     info="a guest name until you type yours; every tab votes under it", max_lines=1)
    if state.access.enabled:
        def signed_in(request: gr.Request) -> gr.Textbox:
            """Votes go under the login name: show it, with the role, and do not let it be edited."""
            name = session.username(request) or ""
            role = "admin" if state.access.is_admin(name) else "voter"
            return gr.Textbox(value=name, interactive=False, label=f"Signed in as ({role})",
                              info="every tab votes under your login")

        demo.load(signed_in, None, box, api_visibility="private")
        return box

    kept = gr.BrowserState(None, storage_key=STORAGE_KEY, secret=STORAGE_SECRET)

    def restore(saved: object, typed: str) -> dict:
        name = (typed or "").strip() or voters.kept_name(saved)  # typed before the page loaded: kept
        return {box: name, kept: name}

    demo.load(restore, [kept, box], [box, kept], queue=False, api_visibility="private")
    box.input(lambda typed: typed, box, kept, queue=False, api_visibility="private")
    return box
