"""The Train tab: a short DPO update (or IPO, KTO, SimPO, ORPO …) on the stored votes (and
imported rows), live metrics, checkpoints and which one serves. The work is `service.training`'s;
this file only wires. The checkpoint table loads when the tab is opened and after every run."""

from dataclasses import dataclass

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from playground.core.errors import PlaygroundError
from playground.training.dpo import DEFAULT_EPOCHS, LOSSES, REFERENCE_FREE, DPOConfig, TrainResult
from service import training, voting
from service.state import AppState
from ui import session
from ui.errors import refusals
from ui.rlhf_panel import build_rlhf_panel, rlhf_choices, rlhf_figure, wire_rlhf_panel
from ui.run_view import step_figure, stream_run

METRICS = [("loss", "loss", 1), ("nll_loss", "NLL (SFT term)", 1), ("rewards/accuracies", "reward accuracy", 2),
           ("rewards/margins", "reward margin", 2), ("kl", "KL reference point z₀", 2),
           ("rewards/chosen", "reward chosen", 3), ("rewards/rejected", "reward rejected", 3)]
# What each loss logs as its rewards (`playground.training.dpo`'s metrics).
REWARD_TITLES = {"simpo": "rewards β·log π_θ(y|x)/|y| (no reference)",
                 "orpo": "rewards λ·log π_θ(y|x)/|y| (no reference)",
                 "kto": "implicit rewards: desirable / undesirable"}
PLOT_TITLE = "Per-step training metrics"
LOSS_NOTES = {
    "sigmoid": "DPO: −log σ(r_w − r_l).", "ipo": "IPO: (h − 1/(2β))², h the per-token mean log-ratio margin.",
    "hinge": "SLiC hinge: max(0, 1 − (r_w − r_l)).", "robust": "Robust DPO for labels flipped with probability ε.",
    "kto": "KTO: each answer on its own, chosen and 👍 desirable, rejected, 👎 and both sides of *Both bad* "
           "undesirable; reference point z₀ from mismatched pairs in the step.",
    "simpo": "SimPO: −log σ(β·(mean log π(y_w) − mean log π(y_l)) − γ). **Reference-free**: trained without the "
             "reference; the held-out rewards and KL still measure against it, after training.",
    "orpo": "ORPO: NLL of the chosen answer + λ·odds-ratio term. **Reference-free**: trained without the "
            "reference; the held-out rewards and KL still measure against it, after training.",
}
NO_RUN = "Loss, reward accuracy / margin and implicit rewards per step appear here while a run trains"
DEFAULTS = DPOConfig()


def metrics_figure(history: list[dict[str, float]], loss: str = "sigmoid") -> go.Figure:
    """Loss, reward accuracy, margin and chosen/rejected rewards per step, as `loss` logs them (a
    metric the loss does not log is left out); before any step, an empty figure saying what it will show."""
    rewards = REWARD_TITLES.get(loss, "implicit rewards r = β·log(π/π_ref)")
    return step_figure(history, METRICS, (f"{loss} loss", "reward accuracy / margin", rewards), (PLOT_TITLE, NO_RUN))


def summary(result: TrainResult) -> str:
    before, after = result.heldout_before, result.heldout_after
    held = (f"held-out ({after.pairs} pairs) reward accuracy **{before.accuracy:.2f} → {after.accuracy:.2f}**, "
            f"margin {before.margin:+.3f} → {after.margin:+.3f}") if before and after else "no held-out pairs (< 5)"
    logp_before, logp_after = result.heldout_logps_before, result.heldout_logps_after
    if result.reference_free and logp_before and logp_after:  # the direct measure for a loss without a reference
        held += (f"; log-prob margin log π(y_w) − log π(y_l) {logp_before.margin:+.2f} → **{logp_after.margin:+.2f}** "
                 "(trained reference-free)")
    rows = f"{result.train_pairs} pairs" + (f" and {result.unpaired} unpaired rows" if result.unpaired else "")
    return (f"Trained {len(result.steps)} steps on {rows} in {result.seconds:.0f} s "
            f"({result.pairs_per_second:.2f} rows/s); {held}. New checkpoint "
            f"`{result.checkpoint.name if result.checkpoint else '—'}` is now serving as `policy`.")


DPO_ROUTE, RLHF_ROUTE = "DPO (or a sibling loss) on the votes", "RLHF on a prompt set, with a reward model"
ROUTES = (DPO_ROUTE, RLHF_ROUTE)


@dataclass(frozen=True)
class DPOForm:
    """The DPO route's settings; each loss's own ones are shown only with it (see `loss_settings`)."""

    box: gr.Column
    steps: gr.Number
    beta: gr.Number
    lr: gr.Number
    batch: gr.Number
    loss: gr.Dropdown
    eps: gr.Number
    heldout: gr.Slider
    seed: gr.Number
    gamma: gr.Number
    orpo_lambda: gr.Number
    desirable: gr.Number
    undesirable: gr.Number
    loss_note: gr.Markdown
    merge: gr.Checkbox
    clean: gr.Checkbox
    start: gr.Button

    @property
    def inputs(self) -> list[gr.components.Component]:
        """`/train`'s inputs, in the order of its parameters."""
        return [self.steps, self.beta, self.lr, self.batch, self.loss, self.eps, self.heldout, self.seed, self.merge,
                self.gamma, self.orpo_lambda, self.desirable, self.undesirable, self.clean]


@dataclass(frozen=True)
class RunPanel:
    """What every run shows, and the checkpoints it makes: the table and which one serves."""

    cancel: gr.Button
    status: gr.Markdown
    plot: gr.Plot
    hint: gr.Markdown
    table: gr.Dataframe
    pick: gr.Dropdown
    serve: gr.Button
    slot_models: tuple[gr.Dropdown, ...]  # the Playground's model pickers

    @property
    def shown(self) -> list[gr.components.Component]:
        """What `checkpoints_view` updates."""
        return [self.table, self.hint, self.pick, *self.slot_models]


def build_train_tab(state: AppState, tab: gr.Tab, slot_models: list[gr.Dropdown]) -> None:
    route = gr.Radio(list(ROUTES), value=DPO_ROUTE, label="Train with", elem_id="train-route")
    form = dpo_section(state)
    rlhf = build_rlhf_panel()
    run = run_section(state, slot_models)

    def checkpoints() -> dict:
        return checkpoints_view(state, run)

    # Loaded whenever the tab is opened (after a run from a script, a restart) and after every run.
    tab.select(checkpoints, None, run.shown, api_visibility="private")
    tab.select(lambda: rlhf_choices(state, rlhf), None, [rlhf.prompt_set, rlhf.reward_model],
               api_visibility="private")

    def show_route(route_v: str) -> dict:
        on_rlhf = route_v == RLHF_ROUTE
        return {form.box: gr.Column(visible=not on_rlhf), rlhf.box: gr.Column(visible=on_rlhf),
                run.plot: rlhf_figure([], "rlhf") if on_rlhf else metrics_figure([])}

    route.change(show_route, route, [form.box, rlhf.box, run.plot], queue=False, api_visibility="private")
    wire_loss_settings(form)
    wire_rlhf_panel(state, rlhf, run.status, run.plot, checkpoints, run.shown)
    wire_dpo(state, form, run)
    wire_run_controls(state, run)


def dpo_section(state: AppState) -> DPOForm:
    with gr.Column() as box:
        gr.Markdown("DPO (or a sibling loss) on your votes (rankings as all pairs; ties left out, and both-bad too "
                    "except for KTO, which also learns from 👍/👎) and imported rows. Only the policy's LoRA adapter "
                    "is trained; the reference stays frozen. Serving goes on while it trains and switches to the new "
                    "adapter when the run finishes.")
        with gr.Row():
            steps = gr.Number(value=DEFAULTS.steps or 0, precision=0, minimum=0,
                              label=f"Steps (0 = {DEFAULT_EPOCHS:g} epochs)")
            beta = gr.Number(value=state.beta, minimum=1e-6, label="β")
            lr = gr.Number(value=DEFAULTS.lr, minimum=0, label="Learning rate")
            batch = gr.Number(value=DEFAULTS.batch_size, precision=0, minimum=1, label="Pairs per step")
        with gr.Row():
            loss = gr.Dropdown([(f"{n} (reference-free)" if n in REFERENCE_FREE else n, n) for n in LOSSES],
                               value=DEFAULTS.loss, label="Loss")
            eps = gr.Number(value=DEFAULTS.label_smoothing, minimum=0, maximum=0.49,
                            label="Label smoothing ε (robust)", visible=DEFAULTS.loss == "robust")
            heldout = gr.Slider(0, 0.5, value=DEFAULTS.heldout, step=0.05, label="Held-out fraction")
            seed = gr.Number(value=DEFAULTS.seed, precision=0, minimum=0, label="Seed")
        with gr.Row():
            gamma = gr.Number(value=DEFAULTS.simpo_gamma, minimum=0, label="SimPO margin γ", visible=False)
            orpo_lambda = gr.Number(value=DEFAULTS.orpo_lambda, minimum=0, label="ORPO λ (odds-ratio weight)",
                                    visible=False)
            desirable = gr.Number(value=DEFAULTS.kto_desirable_weight, minimum=0, label="KTO desirable weight λ_D",
                                  visible=False)
            undesirable = gr.Number(value=DEFAULTS.kto_undesirable_weight, minimum=0,
                                    label="KTO undesirable weight λ_U", visible=False)
        loss_note = gr.Markdown(LOSS_NOTES[DEFAULTS.loss])
        merge = gr.Checkbox(value=False, label="Voting-queue votes: train on one merged vote per prompt (majority; "
                            "prompts without one are left out) instead of every voter's vote")
        clean = gr.Checkbox(value=True, elem_id="train-clean",
                            label="Leave out the votes Data quality flags (identity leaks, outlier voters, duplicate "
                                  "prompts, repeat votes: the Dashboard lists them)")
        start = gr.Button("Train", variant="primary", elem_id="train")
    return DPOForm(box, steps, beta, lr, batch, loss, eps, heldout, seed, gamma, orpo_lambda, desirable, undesirable,
                   loss_note, merge, clean, start)


def run_section(state: AppState, slot_models: list[gr.Dropdown]) -> RunPanel:
    cancel = gr.Button("Cancel the run", variant="stop", elem_id="cancel-train")
    status = gr.Markdown()
    plot = gr.Plot(value=metrics_figure([]), label="Per-step metrics")
    gr.Markdown("### Checkpoints")
    hint = gr.Markdown(elem_id="train-checkpoints-hint")
    table = gr.Dataframe(value=pd.DataFrame(columns=training.TRAIN_TABLE_COLUMNS), headers=training.TRAIN_TABLE_COLUMNS,
                         interactive=False, elem_id="train-checkpoints")
    with gr.Row():
        pick = gr.Dropdown(list(state.checkpoints), label="Checkpoint", scale=3)
        serve = gr.Button("Serve this checkpoint as the policy", scale=1)
    return RunPanel(cancel, status, plot, hint, table, pick, serve, tuple(slot_models))


def checkpoints_view(state: AppState, run: RunPanel) -> dict:
    """The table (with what to do while it is empty) and every model picker, as they are now."""
    names = voting.slot_choices(state)
    rows = training.checkpoint_table(state)
    return {**{d: gr.Dropdown(choices=names) for d in run.slot_models},
            run.pick: gr.Dropdown(choices=list(state.checkpoints)), run.table: rows,
            run.hint: "" if len(rows) else f"**{training.NO_CHECKPOINTS}.**"}


def wire_loss_settings(form: DPOForm) -> None:
    def loss_settings(loss_v: str) -> dict:
        """Only the chosen loss's own settings are shown (and read: see `wire_dpo`)."""
        return {form.eps: gr.Number(visible=loss_v == "robust"), form.gamma: gr.Number(visible=loss_v == "simpo"),
                form.orpo_lambda: gr.Number(visible=loss_v == "orpo"),
                form.desirable: gr.Number(visible=loss_v == "kto"),
                form.undesirable: gr.Number(visible=loss_v == "kto"), form.loss_note: LOSS_NOTES.get(loss_v, "")}

    form.loss.change(loss_settings, form.loss, [form.eps, form.gamma, form.orpo_lambda, form.desirable,
                                                form.undesirable, form.loss_note],
                     queue=False, api_visibility="private")


def wire_dpo(state: AppState, form: DPOForm, run: RunPanel) -> None:
    """`/train`: a DPO (or sibling) run on the votes, its metrics streamed, then the checkpoints."""

    @refusals
    def train(steps_v, beta_v, lr_v, batch_v, loss_v, eps_v, heldout_v, seed_v, merge_v, gamma_v, orpo_lambda_v,
              desirable_v, undesirable_v, clean_v=True, request: gr.Request = None, progress=gr.Progress()):
        session.require_admin(state, request, "training")
        # A hidden field belongs to another loss: its value is not this run's setting.
        own = {"robust": {"label_smoothing": float(eps_v or 0)},
               "simpo": {"simpo_gamma": float(gamma_v or 0)},
               "orpo": {"orpo_lambda": float(orpo_lambda_v or 0)},
               "kto": {"kto_desirable_weight": float(desirable_v or 0),
                       "kto_undesirable_weight": float(undesirable_v or 0)}}.get(loss_v, {})
        cfg = DPOConfig(beta=float(beta_v or 0), lr=float(lr_v or 0), steps=int(steps_v) or None,
                        batch_size=int(batch_v or 0), loss=loss_v, heldout=float(heldout_v), seed=int(seed_v or 0),
                        **own)
        started = training.start_training(state, cfg, merge=bool(merge_v), clean=bool(clean_v))
        if started.left_out:
            gr.Info(f"{started.left_out} flagged vote(s) left out of this run (Dashboard, Data quality); untick "
                    "the box to train on them")
        yield from stream_run(started, progress, run.plot, run.status, lambda history: metrics_figure(history, loss_v),
                              lambda m: f"loss {m['loss']:.4f}", summary, lambda: checkpoints_view(state, run))

    form.start.click(train, form.inputs, [run.plot, run.status, *run.shown], api_name="train", concurrency_id="train")


def wire_run_controls(state: AppState, run: RunPanel) -> None:
    """Cancel (`/cancel_training`) and which checkpoint serves (`/serve_checkpoint`): admin work."""

    @refusals
    def cancel_run(request: gr.Request) -> str:
        session.require_admin(state, request, "cancelling training")
        if not training.cancel_training(state):
            return "No training is running."
        return "Cancelling after the current step…"

    # Queued (a refusal's message reaches only a queued event), but apart from the run it cancels.
    run.cancel.click(cancel_run, None, run.status, api_name="cancel_training", concurrency_id="cancel")

    @refusals
    def serve_picked(name: str | None, request: gr.Request) -> dict:
        session.require_admin(state, request, "switching the serving checkpoint")
        if not name or name not in state.checkpoints:
            raise PlaygroundError("Pick a checkpoint first.")
        training.serve_checkpoint(state, name)
        return {run.status: f"`{name}` is now serving as `policy`.", **checkpoints_view(state, run)}

    run.serve.click(serve_picked, run.pick, [run.status, *run.shown], api_name="serve_checkpoint")
