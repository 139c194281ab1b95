"""The Gradio Blocks app: tabs built from small modules, each event a small function calling the engine."""

from functools import partial
from pathlib import Path

import gradio as gr

from playground.app_state import AppState
from ui import session
from ui.data_tab import build_data_tab
from ui.playground_tab import build_playground_tab
from ui.train_tab import build_train_tab

# Keys 1–4 vote (A better, B better, tie, both bad), S skips, G generates; ignored while typing.
KEYBOARD = """
<script>
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey || (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" ||
      t.isContentEditable))) return;
  const ids = {"1": "vote-a", "2": "vote-b", "3": "vote-tie", "4": "vote-both_bad", "s": "skip", "g": "generate"};
  const el = document.getElementById(ids[e.key.toLowerCase()]);
  if (el && !el.disabled) { e.preventDefault(); el.click(); }
});
</script>
"""


def build_demo(state: AppState) -> gr.Blocks:
    with gr.Blocks(title="Preference Playground") as demo:
        gr.Markdown(
            "# Preference Playground\n"
            f"SFT `{_short(state.models.sft.source)}` · policy `{_short(state.models.policy.source)}` · "
            f"reference `{_short(state.models.reference.source)}` · {state.models.device}"
        )
        with gr.Tab("Playground"):
            handles = build_playground_tab(state)
        with gr.Tab("Data"):
            build_data_tab(state, handles.voter)
        with gr.Tab("Train"):
            build_train_tab(state, handles.slot_models)
        if state.access.enabled:
            demo.load(partial(signed_in, state), None, handles.voter, api_visibility="private")
    return demo


def signed_in(state: AppState, request: gr.Request) -> dict:
    """With logins on, votes go under the login name: show it, and do not let it be edited."""
    name = session.username(request) or ""
    role = "admin" if state.access.is_admin(name) else "voter"
    return gr.Textbox(value=name, interactive=False, label=f"Signed in as ({role})")


def _short(source: str) -> str:
    """A model's folder name (the full path is in the logs and the checkpoint records)."""
    return Path(source.split(" + ")[0]).name + (" + fresh LoRA" if source.endswith("fresh LoRA") else "")


def launch_kwargs(state: AppState) -> dict:
    """`launch()` arguments that belong to the app: the keyboard script, and Gradio's login page
    when accounts are configured."""
    login = {"auth": state.access.login, "auth_message": "Log in with the account you were given."}
    return {"head": KEYBOARD, **(login if state.access.enabled else {})}
