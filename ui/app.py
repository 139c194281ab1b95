"""The Gradio Blocks app: tabs built from small modules, each event a small function calling the engine."""

from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from playground.core.limits import MAX_FILE_BYTES
from service.state import AppState
from ui.blocks import app_blocks
from ui.concurrency import worker_threads
from ui.dashboard_tab import build_dashboard_tab
from ui.data_tab import build_data_tab
from ui.page_cache import PageCache
from ui.playground_tab import build_playground_tab
from ui.train_tab import build_train_tab
from ui.vote_tab import build_vote_tab
from ui.voter import build_voter_box

# Keys 1–4 vote (A better, B better, tie, both bad / all flawed), A–D give that response a 👍 and
# Shift+A–D a 👎, S skips, G generates, Enter takes the Vote tab's next prompt; ignored while
# typing. A key lists buttons of several tabs: the first one on screen (a hidden tab's buttons have
# no offsetParent) and enabled is clicked. Enter on a focused button is left to the button itself.
KEYBOARD = """
<script>
document.addEventListener("keydown", (e) => {
  const t = e.target;
  const key = e.key.toLowerCase();
  if (e.ctrlKey || e.metaKey || e.altKey || (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" ||
      t.isContentEditable)) || (key === "enter" && t && t.tagName === "BUTTON")) return;
  const ids = {"1": ["vote-a", "queue-a"], "2": ["vote-b", "queue-b"], "3": ["vote-tie", "queue-tie"],
               "4": ["vote-both_bad", "queue-both_bad", "queue-all_flawed"], "s": ["skip", "queue-skip"],
               "g": ["generate"], "enter": ["queue-next"]};
  const slot = "abcd".indexOf(key);
  if (key.length === 1 && slot >= 0) {
    const thumb = e.shiftKey ? "down" : "up";
    ids[key] = [`thumb-${thumb}-${slot}`, `queue-thumb-${thumb}-${slot}`];
  }
  const el = (ids[key] || []).map((id) => document.getElementById(id))
    .find((b) => b && b.offsetParent !== null && !b.disabled);
  if (el) { e.preventDefault(); el.click(); }
});
</script>
"""


def build_demo(state: AppState) -> gr.Blocks:
    with app_blocks(title="Preference Playground") as demo:
        with gr.Row(equal_height=True):
            with gr.Column(scale=3):
                title = gr.Markdown(header(state), elem_id="header")
            with gr.Column(scale=1, min_width=260):
                voter = build_voter_box(state, demo)  # every tab's votes go under this one name
        # Each builder gets its own Tab so that it can load its data when the tab is opened.
        with gr.Tab("Playground") as tab:
            slot_models = build_playground_tab(state, tab, voter)
        with gr.Tab("Vote") as tab:
            build_vote_tab(state, tab, voter)
        with gr.Tab("Data") as tab:
            build_data_tab(state, tab, voter)
        with gr.Tab("Train") as tab:
            build_train_tab(state, tab, slot_models)
        with gr.Tab("Dashboard") as tab:
            build_dashboard_tab(state, tab)
        # Read again at each page load, so it names the policy serving now.
        demo.load(lambda: header(state), None, title, queue=False, api_visibility="private")
    return demo


def header(state: AppState) -> str:
    m = state.models
    policy = "equal to SFT until trained" if m.policy_is_sft else f"`{_short(m.policy.source)}`"
    return (f"# Preference Playground\nSFT `{_short(m.sft.source)}` · policy {policy} · "
            f"reference `{_short(m.reference.source)}` · {m.device}")


def _short(source: str) -> str:
    """A model's folder name (the full path is in the logs and the checkpoint records)."""
    return Path(source.split(" + ")[0]).name + (" + fresh LoRA" if source.endswith("fresh LoRA") else "")


def launch_kwargs(state: AppState) -> dict:
    """`launch()` arguments that belong to the app: the keyboard script, the one data folder the
    server may serve, errors shown with their message, and Gradio's login page when accounts are
    configured. Every launch of the app (`playground serve`, tests) passes these."""
    login = {"auth": state.access.login, "auth_message": "Log in with the account you were given."}
    return {
        "head": KEYBOARD,
        # Gradio refuses a bigger upload before it is written to disk; the engine checks again on read.
        "max_file_size": MAX_FILE_BYTES,
        # Downloads are files under <data>/exports; Gradio serves only the working directory, the
        # system temp folder and these paths, and the default data folder (~/.cache/…) is neither.
        # Nothing wider: the votes database and checkpoints stay unreachable.
        "allowed_paths": [str(state.export_dir.resolve())],
        # An error outside our handlers (Gradio's own, e.g. a file it refuses) shows its message too.
        "show_error": True,
        "max_threads": worker_threads(state),  # generating handlers mostly wait on the scheduler (ui/concurrency.py)
        "app_kwargs": {"middleware": [Middleware(PageCache)]},  # the page and its config built once (ui/page_cache.py)
        **(login if state.access.enabled else {}),
    }
