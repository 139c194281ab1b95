"""The Train tab: a short DPO update on the stored votes (and imported pairs), live metrics,
checkpoints and which one serves."""

import queue
import threading
import time

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from playground.core.errors import PlaygroundError
from playground.data.merge import merge_votes
from playground.training.dpo import LOSSES, DPOConfig, TrainResult, train_dpo
from service.state import AppState
from ui import session
from ui.errors import user_errors

METRICS = [("loss", "loss"), ("rewards/accuracies", "reward accuracy"), ("rewards/margins", "reward margin"),
           ("rewards/chosen", "reward chosen"), ("rewards/rejected", "reward rejected")]


def metrics_figure(history: list[dict[str, float]]) -> go.Figure:
    """Loss, reward accuracy, margin and chosen/rejected rewards per step."""
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


def checkpoint_table(state: AppState) -> pd.DataFrame:
    rows = []
    serving = state.models.policy.source
    for c in reversed(state.store.checkpoints()):
        rec = c["record"]
        before, after = (rec.get("heldout") or {}).get("before"), (rec.get("heldout") or {}).get("after")
        rows.append({
            "checkpoint": c["id"], "serving": "●" if c["path"] == serving else "",
            "parent": c["parent"] or "SFT", "pairs": rec.get("pairs", {}).get("count"),
            "steps": len(rec.get("steps", [])),
            "held-out acc before→after": f"{before['accuracy']:.2f} → {after['accuracy']:.2f}" if after else "—",
            "held-out margin after": round(after["margin"], 4) if after else None,
            "β": rec.get("hyperparameters", {}).get("beta"),
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(c["created_at"])),
        })
    return pd.DataFrame(rows)


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
        steps = gr.Number(value=0, precision=0, minimum=0, label="Steps (0 = 3 epochs)")
        beta = gr.Number(value=state.beta, minimum=1e-6, label="β")
        lr = gr.Number(value=5e-4, minimum=0, label="Learning rate")
        batch = gr.Number(value=4, precision=0, minimum=1, label="Pairs per step")
    with gr.Row():
        loss = gr.Dropdown(list(LOSSES), value="sigmoid", label="Loss")
        eps = gr.Number(value=0.0, minimum=0, maximum=0.49, label="Label smoothing ε (robust)")
        heldout = gr.Slider(0, 0.5, value=0.2, step=0.05, label="Held-out fraction")
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
    merge = gr.Checkbox(value=False, label="Voting-queue votes: train on one merged vote per prompt (majority; "
                        "prompts without one are left out) instead of every voter's vote")
    with gr.Row():
        start = gr.Button("Train", variant="primary", elem_id="train")
        cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-train")
    train_status = gr.Markdown()
    plot = gr.Plot(label="Per-step metrics")
    gr.Markdown("### Checkpoints")
    table = gr.Dataframe(value=lambda: checkpoint_table(state), interactive=False)
    with gr.Row():
        pick = gr.Dropdown(list(state.checkpoints), label="Checkpoint", scale=3)
        serve = gr.Button("Serve this checkpoint as the policy", scale=1)

    def pickers() -> dict:
        names = list(state.slot_catalog())
        return {**{d: gr.Dropdown(choices=names) for d in slot_models},
                pick: gr.Dropdown(choices=list(state.checkpoints)), table: checkpoint_table(state)}

    @user_errors
    def train(steps_v, beta_v, lr_v, batch_v, loss_v, eps_v, heldout_v, seed_v, merge_v, request: gr.Request,
              progress=gr.Progress()):
        session.require_admin(state, request, "training")
        if not state.training.acquire(blocking=False):
            raise gr.Error("A training run is already in progress; wait for it or cancel it.")
        try:
            cfg = DPOConfig(beta=float(beta_v or 0), lr=float(lr_v or 0), steps=int(steps_v) or None,
                            batch_size=int(batch_v or 0), loss=loss_v, label_smoothing=float(eps_v or 0),
                            heldout=float(heldout_v), seed=int(seed_v or 0)).validate()
            votes = merge_votes(state.store.votes()).votes if merge_v else None
            pairs = state.store.training_pairs("all_pairs", cfg.seed, votes)
            state.cancel_training.clear()
            events: queue.Queue = queue.Queue()
            worker = threading.Thread(target=_run, args=(state, pairs, cfg, events), daemon=True)
            worker.start()
            history: list[dict[str, float]] = []
            started = time.perf_counter()
            while (item := events.get())[0] == "step":
                _, step, total, metrics = item
                history.append(metrics)
                left = (time.perf_counter() - started) / step * (total - step)
                progress((step, total), desc=f"step {step}/{total}, about {left:.0f} s left", unit="steps")
                yield {plot: metrics_figure(history),
                       train_status: f"Step {step}/{total}: loss {metrics['loss']:.4f}, about {left:.0f} s left"}
            worker.join()
            kind, payload = item
            if kind == "error":
                raise payload
            result: TrainResult = payload
            if result.cancelled:
                yield {train_status: f"Cancelled after {len(result.steps)} steps; nothing was saved and the "
                                     "serving policy is unchanged."}
                return
            yield {train_status: summary(result), **pickers()}
        finally:
            state.training.release()

    outputs = [plot, train_status, table, pick, *slot_models]
    start.click(train, [steps, beta, lr, batch, loss, eps, heldout, seed, merge], outputs, api_name="train",
                concurrency_id="train")

    @user_errors
    def cancel_run(request: gr.Request) -> str:
        session.require_admin(state, request, "cancelling training")
        if not state.training.locked():
            return "No training is running."
        state.cancel_training.set()
        return "Cancelling after the current step…"

    cancel.click(cancel_run, None, train_status, queue=False, api_name="cancel_training")

    @user_errors
    def serve_picked(name: str | None, request: gr.Request) -> dict:
        session.require_admin(state, request, "switching the serving checkpoint")
        if not name or name not in state.checkpoints:
            raise gr.Error("Pick a checkpoint first.")
        state.serve(name)
        return {train_status: f"`{name}` is now serving as `policy`.", **pickers()}

    serve.click(serve_picked, pick, [train_status, table, pick, *slot_models], api_name="serve_checkpoint")


def _run(state: AppState, pairs: list, cfg: DPOConfig, events: queue.Queue) -> None:
    """Worker thread: train, register and attach the checkpoint; report through `events`."""
    try:
        result = train_dpo(state.models, pairs, cfg, state.checkpoint_dir,
                           callback=lambda step, total, m: events.put(("step", step, total, m)),
                           should_stop=state.cancel_training.is_set)
        if result.checkpoint is not None:
            state.add_checkpoint(result.checkpoint)
            state.remember_serving(result.checkpoint.name)  # train_dpo has published it as the policy
        events.put(("done", result))
    except PlaygroundError as exc:
        events.put(("error", exc))
    except Exception as exc:  # shown to the user; the engine already left the policy as it was
        events.put(("error", PlaygroundError(f"training failed: {type(exc).__name__}: {exc}")))

