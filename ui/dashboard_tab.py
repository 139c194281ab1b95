"""The Dashboard tab: ratings with intervals, win rates against a baseline, checkpoints over time,
KL to the reference, judges and the reward model. Numbers come from `evals`; this file only wires."""

import time
from pathlib import Path

import gradio as gr

from evals.dashboard import (
    build_report,
    heatmap,
    rating_figure,
    reward_kl_figure,
    reward_model_table,
    timeline_figure,
    win_rate_display,
    write_tables,
    zip_tables,
)
from evals.judge import make_judge, run_judge
from evals.kl import EVAL_PROMPTS, estimate_kl, eval_prompts
from evals.ratings import read_battles
from playground.core.errors import PlaygroundError
from playground.scoring.generation import GenerationSettings
from playground.training.reward_model import RECORD as RM_RECORD
from playground.training.reward_model import RewardConfig, train_reward_model
from service.state import AppState
from ui import session
from ui.errors import user_errors

BUILT_IN = f"built-in eval prompts ({EVAL_PROMPTS.name})"
JUDGES = {"shorter wins": "shorter", "longer wins": "longer", "contains the phrase wins": "contains",
          "avoids the phrase wins": "avoids", "reward model": "reward-model"}
MAX_BOOTSTRAP = 5000


def reward_model_dir(state: AppState) -> Path:
    return state.data_dir / "reward-models"


def reward_model_folders(state: AppState) -> list[Path]:
    folder = reward_model_dir(state)
    return sorted(d for d in folder.iterdir() if (d / RM_RECORD).is_file()) if folder.is_dir() else []


def reward_models(state: AppState) -> list[str]:
    return [d.name for d in reward_model_folders(state)]


def build_dashboard_tab(state: AppState, tab: gr.Tab) -> None:
    gr.Markdown("Ratings from battles: human votes (the policy is rated as the checkpoint it was serving) and, if "
                "ticked, judge battles. Bradley–Terry maximum likelihood on the Elo scale (400·log₁₀ odds), a tie "
                "half a win each way, intervals from resampling battles.")
    with gr.Row():
        human = gr.Checkbox(value=True, label="Human votes", scale=1)
        judges = gr.CheckboxGroup(list(state.store.counts_by_judge()), label="Judge battles", scale=3)
        baseline = gr.Dropdown(["sft"], value="sft", label="Baseline for win rates", allow_custom_value=True, scale=2)
        anchor = gr.Dropdown(["sft"], value="sft", label="Anchor (rated 1000)", allow_custom_value=True, scale=2)
        rounds = gr.Number(value=1000, precision=0, minimum=0, maximum=MAX_BOOTSTRAP, label="Bootstrap rounds",
                           scale=1)
        arena_file = gr.File(label="+ battles file (Arena rows)", file_types=[".jsonl", ".json", ".csv", ".parquet"],
                             scale=2, height=90)
        refresh = gr.Button("Refresh", variant="primary", scale=1, elem_id="dashboard-refresh")
    summary = gr.Markdown()
    leaderboard = gr.Dataframe(label="Leaderboard", interactive=False)
    with gr.Row():
        rating_plot = gr.Plot(show_label=False)
        timeline_plot = gr.Plot(show_label=False)
    with gr.Row():
        fraction_plot = gr.Plot(show_label=False)
        count_plot = gr.Plot(show_label=False)
        predicted_plot = gr.Plot(show_label=False)
    win_rates = gr.Dataframe(label="Win rate against the baseline: ties ½, 95% Wilson interval; mean response "
                             "length in characters next to it (longer answers tend to win)", interactive=False)
    gr.Markdown("### Checkpoints\nHeld-out metrics come from each run's record; KL(π_θ ‖ π_ref) is estimated "
                "on the fixed prompt set from samples at temperature 1.")
    records = gr.Dataframe(interactive=False)
    with gr.Row():
        kl_plot = gr.Plot(show_label=False, scale=2)
        with gr.Column(scale=1):
            kl_button = gr.Button("Estimate KL for every checkpoint")
            kl_status = gr.Markdown()
            downloads = gr.File(label="Every table, CSV and JSON (zip)", interactive=False)

    with gr.Accordion("Automated comparison: let a judge vote", open=False):
        with gr.Row():
            judge_models = gr.Dropdown(list(state.slot_catalog()), value=["policy", "sft"], multiselect=True,
                                       label="Models (2 or more)", scale=3)
            prompt_source = gr.Dropdown([BUILT_IN, *(s.name for s in state.store.prompt_sets())], value=BUILT_IN,
                                        label="Prompts", scale=2)
            max_new = gr.Slider(8, 512, value=96, step=8, label="Max new tokens", scale=1)
        with gr.Row():
            judge_kind = gr.Dropdown(list(JUDGES), value="shorter wins", label="Judge", scale=2)
            phrase = gr.Textbox(label="Phrase (contains / avoids)", scale=2)
            rm_pick = gr.Dropdown(reward_models(state), label="Reward model", scale=2)
            judge_button = gr.Button("Run judge", variant="primary", scale=1)
        judge_status = gr.Markdown()
    with gr.Accordion("Reward model: Bradley–Terry on the votes, usable as a judge", open=False):
        gr.Markdown("The SFT model with LoRA and a scalar head, trained with ℓ = −log σ(r(x, y⁺) − r(x, y⁻)) on the "
                    "same pairs DPO uses; held-out pairs are never trained on.")
        with gr.Row():
            rm_steps = gr.Number(value=0, precision=0, minimum=0, label="Steps (0 = 3 epochs)")
            rm_lr = gr.Number(value=RewardConfig.lr, minimum=0, label="Learning rate")
            rm_heldout = gr.Slider(0, 0.5, value=0.2, step=0.05, label="Held-out fraction")
            rm_button = gr.Button("Train reward model")
        rm_status = gr.Markdown()
        rm_table = gr.Dataframe(value=lambda: reward_model_table(reward_model_folders(state)), interactive=False,
                                label="Reward models: held-out accuracy (ties ½) and margin r⁺ − r⁻")

    @user_errors
    def show(human_v: bool, judges_v: list[str], baseline_v: str, anchor_v: str, rounds_v: float,
             file: str | None) -> dict:
        n_rounds = int(rounds_v or 0)
        if not 0 <= n_rounds <= MAX_BOOTSTRAP:
            raise PlaygroundError(f"bootstrap rounds must be 0..{MAX_BOOTSTRAP}")
        extra = [{**b, "source": Path(file).name} for b in read_battles(Path(file))] if file else []
        report = build_report(state.store, human_v, judges_v or [], baseline_v or "sft", anchor_v or None,
                              n_rounds, kl=state.kl_estimates, extra=extra)
        models = list(report.ratings.leaderboard.index) if report.ratings else ["sft"]
        out_dir = state.export_path("dashboard")
        figures = {}
        if report.ratings:
            r = report.ratings
            figures = {
                rating_plot: rating_figure(r),
                fraction_plot: heatmap(r.win_fraction, "Win fraction, row vs column (ties ½)", ".2f", 0, 1),
                count_plot: heatmap(r.battles.astype(float), "Battles between row and column", ".0f",
                                    colorscale="Blues"),
                predicted_plot: heatmap(r.predicted, "Predicted P(row beats column) from the ratings", ".2f", 0, 1),
            }
        return {
            summary: report.message, leaderboard: report.leaderboard, win_rates: win_rate_display(report.win_rates),
            records: report.checkpoints, timeline_plot: timeline_figure(report.timeline, baseline_v or "sft"),
            kl_plot: reward_kl_figure(report.checkpoints),
            downloads: str(zip_tables(write_tables(report, out_dir), out_dir / "dashboard-tables.zip")),
            judges: gr.CheckboxGroup(choices=list(state.store.counts_by_judge()), value=judges_v),
            baseline: gr.Dropdown(choices=models), anchor: gr.Dropdown(choices=models),
            **figures,
        }

    inputs = [human, judges, baseline, anchor, rounds, arena_file]
    outputs = [summary, leaderboard, win_rates, records, timeline_plot, kl_plot, downloads, judges, baseline, anchor,
               rating_plot, fraction_plot, count_plot, predicted_plot]
    refresh.click(show, inputs, outputs, api_name="dashboard")

    @user_errors
    def estimate(request: gr.Request, progress=gr.Progress()) -> str:
        session.require_admin(state, request, "estimating KL")
        if not state.checkpoints:
            raise PlaygroundError("no checkpoints yet: train one in the Train tab")
        prompts = eval_prompts()
        lines = []
        for n, (name, role) in enumerate(state.checkpoints.items()):
            done = n / len(state.checkpoints)
            kl = estimate_kl(state.scorer, role, prompts, progress=lambda i, total, d=done, c=name: progress(
                d + i / total / len(state.checkpoints), desc=f"{c}: prompt {i}/{total}"))
            state.kl_estimates[name] = kl
            lines.append(f"`{name}`: KL ≈ {kl.mean:.3f} ± {kl.stderr:.3f} nats ({kl.n} samples)")
        return "\n\n".join(lines) + "\n\nRefresh to see them in the table and the plot."

    kl_button.click(estimate, None, kl_status, api_name="estimate_kl", concurrency_id="model")

    @user_errors
    def judge(models_v: list[str], source: str, max_new_v: float, kind: str, phrase_v: str, rm: str | None,
              request: gr.Request, progress=gr.Progress()) -> dict:
        session.require_admin(state, request, "running a judge")
        spec = JUDGES.get(kind)
        if spec is None:
            raise PlaygroundError(f"unknown judge {kind!r}")
        if spec in ("contains", "avoids"):
            spec = f"{spec}:{(phrase_v or '').strip()}"
        elif spec == "reward-model":
            if not rm or rm not in reward_models(state):
                raise PlaygroundError("pick a trained reward model (train one below)")
            spec = f"reward-model:{reward_model_dir(state) / rm}"
        prompts = (eval_prompts() if source == BUILT_IN else
                   [p.messages for p in state.store.set_prompts(state.store.prompt_set(source).id)])
        settings = GenerationSettings(max_new_tokens=int(max_new_v))
        judged = make_judge(spec, state)
        battles = run_judge(state, prompts, models_v or [], judged, settings,
                            progress=lambda i, total: progress((i, total), desc="generating", unit="prompts"))
        return {judge_status: f"{len(battles)} battles judged by `{judged.name}` and stored; tick it above and "
                              "Refresh to include them in the leaderboard.",
                judges: gr.CheckboxGroup(choices=list(state.store.counts_by_judge()))}

    judge_button.click(judge, [judge_models, prompt_source, max_new, judge_kind, phrase, rm_pick],
                       [judge_status, judges], api_name="run_judge", concurrency_id="model")

    @user_errors
    def train_rm(steps_v: float, lr_v: float, heldout_v: float, request: gr.Request, progress=gr.Progress()) -> dict:
        session.require_admin(state, request, "training a reward model")
        if not state.training.acquire(blocking=False):
            raise PlaygroundError("a training run is in progress; wait for it to finish")
        try:
            cfg = RewardConfig(steps=int(steps_v or 0) or None, lr=float(lr_v or 0), heldout=float(heldout_v))
            pairs = state.store.training_pairs("all_pairs", cfg.seed)
            result = train_reward_model(
                state.models.sft.source, state.models.tokenizer, pairs, cfg.validate(),
                callback=lambda step, total, m: progress((step, total), desc=f"loss {m['loss']:.3f}", unit="steps"),
                device=state.models.device, dtype=state.models.dtype)
        finally:
            state.training.release()
        if result.model is None:
            raise PlaygroundError("the reward model run was cancelled; nothing was saved")
        folder = result.model.save(reward_model_dir(state) / f"rm-{time.strftime('%Y%m%d-%H%M%S')}")
        before, after = result.heldout_before, result.heldout_after
        held = (f"held-out ({after.pairs} pairs) accuracy **{before.accuracy:.2f} → {after.accuracy:.2f}**"
                if before and after else "no held-out pairs (fewer than 5)")
        return {rm_status: f"Trained `{folder.name}`: {len(result.steps)} steps on {result.train_pairs} pairs, {held}."
                           " Pick it as the judge above.",
                rm_pick: gr.Dropdown(choices=reward_models(state), value=folder.name),
                rm_table: reward_model_table(reward_model_folders(state))}

    rm_button.click(train_rm, [rm_steps, rm_lr, rm_heldout], [rm_status, rm_pick, rm_table],
                    api_name="train_reward_model",
                    concurrency_id="train")
