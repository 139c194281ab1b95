"""The Train tab's RLHF panel: PPO, RLOO or GRPO on a stored prompt set against a trained reward
model, with live plots of reward, KL, entropy, clip fraction and (PPO) value loss. The run is
`service.rlhf`'s and shares the DPO run's lock, Cancel and safety; this file only wires."""

from collections.abc import Callable
from typing import NamedTuple

import gradio as gr
import plotly.graph_objects as go

from playground.core.errors import PlaygroundError
from playground.training.rlhf import METHODS, RLHFConfig, RLHFResult
from service import prompt_sets, rlhf, training
from service.state import AppState
from ui import session
from ui.errors import refusals
from ui.run_view import step_figure, stream_run

DEFAULTS = RLHFConfig()
PLOT_TITLE = "Per-step RLHF metrics"
NO_RUN = "Reward, KL, entropy, clip fraction and (PPO) value loss per step appear here while a run trains"
# (metric, label, subplot): what the three panels show, as `playground.training.rlhf` logs it.
METRICS = [("reward", "reward r_φ", 1), ("objective", "reward − β·KL", 1), ("kl", "KL (nats)", 2),
           ("entropy", "entropy (nats/token)", 2), ("clip_fraction", "clip fraction", 3),
           ("value_loss", "value loss (PPO)", 3)]
METHOD_NOTES = {
    "ppo": "PPO: clipped surrogate with a value head on the policy's hidden states, GAE advantages (λ, γ), "
           "whitened; several epochs of minibatches per rollout.",
    "rloo": "RLOO: REINFORCE with the leave-one-out baseline over the K samples of each prompt.",
    "grpo": "GRPO: advantages normalised within each prompt's group of K samples, clipped objective.",
}


class RLHFPanel(NamedTuple):
    """The panel's components: `box` is shown or hidden, the pickers refreshed, `inputs` (in the
    order of `/train_rlhf`'s parameters) read by `start`."""

    box: gr.Column
    prompt_set: gr.Dropdown
    reward_model: gr.Dropdown
    inputs: list[gr.components.Component]
    start: gr.Button


def rlhf_figure(history: list[dict[str, float]], method: str) -> go.Figure:
    """Reward and objective, KL and entropy, clip fraction and value loss per step; before any
    step, an empty figure saying what it will show."""
    titles = (f"{method}: reward", "KL to reference, entropy", "clip fraction, value loss")
    return step_figure(history, METRICS, titles, (PLOT_TITLE, NO_RUN))


def step_line(m: dict[str, float]) -> str:
    return f"reward {m.get('reward', float('nan')):+.3f}, KL {m.get('kl', float('nan')):.3f}"


def rlhf_summary(result: RLHFResult) -> str:
    before, after = result.heldout_before, result.heldout_after
    held = (f"held-out ({after.prompts} prompts, greedy) reward **{before.reward:+.3f} → {after.reward:+.3f}**, "
            f"length {before.length:.0f} → {after.length:.0f} tokens") if before and after else \
        "no held-out prompts (< 5)"
    last = result.steps[-1] if result.steps else {}
    kl = f"; last step KL {last['kl']:.3f} nats" if "kl" in last else ""
    return (f"Trained {len(result.steps)} steps on {result.train_prompts} prompts in {result.seconds:.0f} s; "
            f"{held}{kl}. New checkpoint `{result.checkpoint.name if result.checkpoint else '—'}` is now serving "
            "as `policy`.")


def build_rlhf_panel() -> RLHFPanel:
    """The panel's layout (hidden until RLHF is chosen); `wire_rlhf_panel` gives it its events."""
    with gr.Column(visible=False) as box:
        gr.Markdown("RLHF: sample K answers per prompt from the policy (T = 1), score them with a reward model "
                    "trained on your votes (Dashboard → Reward model), and maximise E[r_φ] − β·KL(π_θ ‖ π_ref): "
                    "the reward at the last token, −β·log-ratio at every token. Only the policy's LoRA trains.")
        with gr.Row():
            prompt_set = gr.Dropdown([], label="Prompt set", allow_custom_value=True, scale=2)
            reward_model = gr.Dropdown([], label="Reward model", allow_custom_value=True, scale=2)
            method = gr.Radio(list(METHODS), value=DEFAULTS.method, label="Method", scale=2)
        with gr.Row():
            steps = gr.Number(value=DEFAULTS.steps, precision=0, minimum=1, label="Steps (rollouts)")
            beta = gr.Number(value=DEFAULTS.beta, minimum=1e-6, label="β (KL penalty)")
            lr = gr.Number(value=DEFAULTS.lr, minimum=0, label="Learning rate")
            samples = gr.Number(value=DEFAULTS.samples_per_prompt, precision=0, minimum=1, label="Samples per prompt K")
            batch = gr.Number(value=DEFAULTS.batch_size, precision=0, minimum=1, label="Prompts per step")
        with gr.Row():
            max_new = gr.Number(value=DEFAULTS.max_new_tokens, precision=0, minimum=1, label="Max new tokens")
            clip = gr.Number(value=DEFAULTS.clip_range, minimum=0, label="Clip range ε")
            kl_target = gr.Number(value=0, minimum=0, label="KL target (0 = fixed β; else adaptive β)")
            heldout = gr.Slider(0, 0.5, value=DEFAULTS.heldout, step=0.05, label="Held-out prompts")
            seed = gr.Number(value=DEFAULTS.seed, precision=0, minimum=0, label="Seed")
        with gr.Row(visible=DEFAULTS.method == "ppo") as ppo_row:
            value_coef = gr.Number(value=DEFAULTS.value_coef, minimum=0, label="Value coefficient")
            gae_lambda = gr.Number(value=DEFAULTS.gae_lambda, minimum=0, maximum=1, label="GAE λ")
            gamma = gr.Number(value=DEFAULTS.gamma, minimum=0, maximum=1, label="GAE γ")
            epochs = gr.Number(value=DEFAULTS.ppo_epochs, precision=0, minimum=1, label="PPO epochs per rollout")
        note = gr.Markdown(METHOD_NOTES[DEFAULTS.method])
        start = gr.Button("Train with RLHF", variant="primary", elem_id="train-rlhf")

    def method_settings(method_v: str) -> dict:
        return {ppo_row: gr.Row(visible=method_v == "ppo"), note: METHOD_NOTES.get(method_v, "")}

    method.change(method_settings, method, [ppo_row, note], queue=False, api_visibility="private")
    inputs = [prompt_set, reward_model, method, steps, beta, lr, samples, batch, max_new, clip, kl_target, heldout,
              seed, value_coef, gae_lambda, gamma, epochs]
    return RLHFPanel(box, prompt_set, reward_model, inputs, start)


def wire_rlhf_panel(state: AppState, panel: RLHFPanel, status: gr.Markdown, plot: gr.Plot,
                    checkpoints: Callable[[], dict], shown: list[gr.components.Component]) -> None:
    """`/train_rlhf`: start a run from the panel's settings and stream its metrics into `plot` and
    `status`; `checkpoints()` gives the updates of `shown` (the checkpoint table, every model picker)."""

    @refusals
    def train(set_v, rm_v, method_v, steps_v, beta_v, lr_v, samples_v, batch_v, max_new_v, clip_v, kl_target_v,
              heldout_v, seed_v, value_coef_v, gae_lambda_v, gamma_v, epochs_v, request: gr.Request,
              progress=gr.Progress()):
        session.require_admin(state, request, "training")
        if not set_v:
            raise PlaygroundError("Choose a prompt set (import one in the Vote tab's admin panel).")
        if not rm_v:
            raise PlaygroundError("Choose a reward model (train one on the Dashboard).")
        # The PPO fields are hidden for the other methods: their values are not this run's settings.
        ppo = {"value_coef": float(value_coef_v or 0), "gae_lambda": float(gae_lambda_v),
               "gamma": float(gamma_v or 0), "ppo_epochs": int(epochs_v or 0)} if method_v == "ppo" else {}
        cfg = RLHFConfig(method=method_v, steps=int(steps_v or 0), beta=float(beta_v or 0), lr=float(lr_v or 0),
                         samples_per_prompt=int(samples_v or 0), batch_size=int(batch_v or 0),
                         max_new_tokens=int(max_new_v or 0), clip_range=float(clip_v or 0),
                         kl_target=float(kl_target_v) if kl_target_v else None, heldout=float(heldout_v),
                         seed=int(seed_v or 0), **ppo)
        run = rlhf.start_rlhf(state, cfg, rlhf.prompt_set_prompts(state, set_v), rm_v)
        yield from stream_run(run, progress, plot, status, lambda history: rlhf_figure(history, method_v),
                              step_line, rlhf_summary, checkpoints)

    panel.start.click(train, panel.inputs, [plot, status, *shown], api_name="train_rlhf", concurrency_id="train")


def rlhf_choices(state: AppState, panel: RLHFPanel) -> dict:
    """The prompt sets and reward models there are now."""
    return {panel.prompt_set: gr.Dropdown(choices=prompt_sets.set_names(state)),
            panel.reward_model: gr.Dropdown(choices=training.reward_models(state))}
