"""The Train tab: a short DPO update on the stored votes (and imported pairs), live metrics,
checkpoints and which one serves. The work is `service.training`'s; this file only wires. The
checkpoint table loads when the tab is opened and after every run."""

import time

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from evals.dashboard import empty_figure
from playground.training.dpo import DEFAULT_EPOCHS, LOSSES, DPOConfig, TrainResult
from service import training, voting
from service.state import AppState
from ui import session
from ui.errors import user_errors

METRICS = [("loss", "loss"), ("rewards/accuracies", "reward accuracy"), ("rewards/margins", "reward margin"),
           ("rewards/chosen", "reward chosen"), ("rewards/rejected", "reward rejected")]
PLOT_TITLE = "Per-step DPO metrics"
NO_RUN = "Loss, reward accuracy / margin and implicit rewards per step appear here while a run trains"
DEFAULTS = DPOConfig()


def metrics_figure(history: list[dict[str, float]]) -> go.Figure:
    """Loss, reward accuracy, margin and chosen/rejected rewards per step; before any step, an
    empty figure saying what it will show."""
    if not history:
        return empty_figure(PLOT_TITLE, NO_RUN)
    fig = make_subplots(rows=1, cols=3, subplot_titles=("DPO loss", "reward accuracy / margin",
                                                        "implicit rewards r = β·log(π/π_ref)"))
    steps = list(range(1, len(history) + 1))
    col = {"loss": 1, "rewards/accuracies": 2, "rewards/margins": 2, "rewards/chosen": 3, "rewards/rejected": 3}
    for key, label in METRICS:
        fig.add_trace(go.Scatter(x=steps, y=[m.get(key) for m in history], mode="lines+markers", name=label),
                      row=1, col=col[key])
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=320, margin={"l": 40, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h"})
    return fig


def summary(result: TrainResult) -> str:
    before, after = result.heldout_before, result.heldout_after
    held = (f"held-out ({after.pairs} pairs) reward accuracy **{before.accuracy:.2f} → {after.accuracy:.2f}**, "
            f"margin {before.margin:+.3f} → {after.margin:+.3f}") if before and after else "no held-out pairs (< 5)"
    return (f"Trained {len(result.steps)} steps on {result.train_pairs} pairs in {result.seconds:.0f} s "
            f"({result.pairs_per_second:.2f} pairs/s); {held}. New checkpoint "
            f"`{result.checkpoint.name if result.checkpoint else '—'}` is now serving as `policy`.")


def build_train_tab(state: AppState, tab: gr.Tab, slot_models: list[gr.Dropdown]) -> None:
    gr.Markdown("DPO on your votes (ties and both-bad left out; rankings as all pairs) and imported pairs. "
                "Only the policy's LoRA adapter is trained; the reference stays frozen. Serving goes on "
                "while it trains and switches to the new adapter when the run finishes.")
    with gr.Row():
        steps = gr.Number(value=DEFAULTS.steps or 0, precision=0, minimum=0,
                          label=f"Steps (0 = {DEFAULT_EPOCHS:g} epochs)")
        beta = gr.Number(value=state.beta, minimum=1e-6, label="β")
        lr = gr.Number(value=DEFAULTS.lr, minimum=0, label="Learning rate")
        batch = gr.Number(value=DEFAULTS.batch_size, precision=0, minimum=1, label="Pairs per step")
    with gr.Row():
        loss = gr.Dropdown(list(LOSSES), value=DEFAULTS.loss, label="Loss")
        eps = gr.Number(value=DEFAULTS.label_smoothing, minimum=0, maximum=0.49, label="Label smoothing ε (robust)")
        heldout = gr.Slider(0, 0.5, value=DEFAULTS.heldout, step=0.05, label="Held-out fraction")
        seed = gr.Number(value=DEFAULTS.seed, precision=0, minimum=0, label="Seed")
    merge = gr.Checkbox(value=False, label="Voting-queue votes: train on one merged vote per prompt (majority; "
                        "prompts without one are left out) instead of every voter's vote")
    with gr.Row():
        start = gr.Button("Train", variant="primary", elem_id="train")
        cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-train")
    train_status = gr.Markdown()
    plot = gr.Plot(value=metrics_figure([]), label="Per-step metrics")
    gr.Markdown("### Checkpoints")
    hint = gr.Markdown(elem_id="train-checkpoints-hint")
    table = gr.Dataframe(value=pd.DataFrame(columns=training.TRAIN_TABLE_COLUMNS), headers=training.TRAIN_TABLE_COLUMNS,
                         interactive=False, elem_id="train-checkpoints")
    with gr.Row():
        pick = gr.Dropdown(list(state.checkpoints), label="Checkpoint", scale=3)
        serve = gr.Button("Serve this checkpoint as the policy", scale=1)

    def checkpoints() -> dict:
        """The table (with what to do while it is empty) and every model picker, as they are now."""
        names = voting.slot_choices(state)
        rows = training.checkpoint_table(state)
        return {**{d: gr.Dropdown(choices=names) for d in slot_models},
                pick: gr.Dropdown(choices=list(state.checkpoints)), table: rows,
                hint: "" if len(rows) else f"**{training.NO_CHECKPOINTS}.**"}

    shown = [table, hint, pick, *slot_models]
    # Loaded whenever the tab is opened (after a run from a script, a restart) and after every run.
    tab.select(checkpoints, None, shown, api_visibility="private")

    @user_errors
    def train(steps_v, beta_v, lr_v, batch_v, loss_v, eps_v, heldout_v, seed_v, merge_v, request: gr.Request,
              progress=gr.Progress()):
        session.require_admin(state, request, "training")
        cfg = DPOConfig(beta=float(beta_v or 0), lr=float(lr_v or 0), steps=int(steps_v) or None,
                        batch_size=int(batch_v or 0), loss=loss_v, label_smoothing=float(eps_v or 0),
                        heldout=float(heldout_v), seed=int(seed_v or 0))
        run = training.start_training(state, cfg, merge=bool(merge_v))
        history: list[dict[str, float]] = []
        started = time.perf_counter()
        for event in run.events():
            history.append(event.metrics)
            left = (time.perf_counter() - started) / event.step * (event.total - event.step)
            progress((event.step, event.total), desc=f"step {event.step}/{event.total}, about {left:.0f} s left",
                     unit="steps")
            yield {plot: metrics_figure(history), train_status: f"Step {event.step}/{event.total}: loss "
                                                                f"{event.metrics['loss']:.4f}, about {left:.0f} s left"}
        result = run.result()
        if result.cancelled:
            yield {train_status: f"Cancelled after {len(result.steps)} steps; nothing was saved and the "
                                 "serving policy is unchanged.", **checkpoints()}
            return
        yield {train_status: summary(result), **checkpoints()}

    start.click(train, [steps, beta, lr, batch, loss, eps, heldout, seed, merge], [plot, train_status, *shown],
                api_name="train", concurrency_id="train")

    @user_errors
    def cancel_run(request: gr.Request) -> str:
        session.require_admin(state, request, "cancelling training")
        if not training.cancel_training(state):
            return "No training is running."
        return "Cancelling after the current step…"

    cancel.click(cancel_run, None, train_status, queue=False, api_name="cancel_training")

    @user_errors
    def serve_picked(name: str | None, request: gr.Request) -> dict:
        session.require_admin(state, request, "switching the serving checkpoint")
        if not name or name not in state.checkpoints:
            raise gr.Error("Pick a checkpoint first.")
        training.serve_checkpoint(state, name)
        return {train_status: f"`{name}` is now serving as `policy`.", **checkpoints()}

    serve.click(serve_picked, pick, [train_status, *shown], api_name="serve_checkpoint")
