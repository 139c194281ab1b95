"""The Dashboard tab: ratings with intervals, win rates against a baseline, checkpoints over time,
KL to the reference, judges and the reward model. Numbers come from `evals` through the
application layer (`service.evaluation`, `service.training`); this file only wires. The report is
computed when the tab is opened and after a KL estimate or a judge run; downloads only on request."""

from pathlib import Path

import gradio as gr

from evals.dashboard import (
    ALL_CATEGORIES,
    CHECKPOINT_COLUMNS,
    JUDGE_COLUMNS,
    LEADERBOARD_COLUMNS,
    NO_BATTLES,
    STYLE_COLUMNS,
    WIN_RATE_COLUMNS,
    Report,
    empty_figure,
    heatmap,
    rating_figure,
    reward_kl_figure,
    reward_model_kl_figure,
    reward_model_table,
    timeline_figure,
    win_rate_display,
)
from playground.core.errors import PlaygroundError
from playground.inference.settings import GenerationSettings
from playground.training.reward_model import RewardConfig
from service import evaluation, training
from service.state import AppState
from ui import session
from ui.errors import user_errors

JUDGES = {"shorter wins": "shorter", "longer wins": "longer", "contains the phrase wins": "contains",
          "avoids the phrase wins": "avoids", "reward model": "reward-model", "LLM judge (a local model)": "llm"}
REWARD_MODEL_COLUMNS = ["reward model", "created", "pairs", "held-out pairs", "steps", "held-out acc before",
                        "held-out acc after", "held-out margin after"]
FRACTION_TITLE = "Win fraction, row vs column (ties ½)"
COUNT_TITLE = "Battles between row and column"
PREDICTED_TITLE = "Predicted P(row beats column) from the ratings"


def rating_figures(report: Report) -> tuple:
    """The four ratings plots: (rating, win fraction, battle counts, predicted), each saying what to
    do when there are no ratings yet."""
    r = report.ratings
    if r is None:
        hint = NO_BATTLES if report.n_battles == 0 else "Ratings need battles between at least 2 models"
        return tuple(empty_figure(title, hint) for title in ("Bradley–Terry rating", FRACTION_TITLE, COUNT_TITLE,
                                                             PREDICTED_TITLE))
    return (rating_figure(r), heatmap(r.win_fraction, FRACTION_TITLE, ".2f", 0, 1),
            heatmap(r.battles.astype(float), COUNT_TITLE, ".0f", colorscale="Blues"),
            heatmap(r.predicted, PREDICTED_TITLE, ".2f", 0, 1))


def build_dashboard_tab(state: AppState, tab: gr.Tab) -> None:
    gr.Markdown("Ratings from battles: human votes (the policy is rated as the checkpoint it was serving) and, if "
                "ticked, judge battles. Bradley–Terry maximum likelihood on the Elo scale (400·log₁₀ odds), a tie "
                "half a win each way, intervals from resampling votes.")
    with gr.Row():
        human = gr.Checkbox(value=True, label="Human votes", scale=1)
        judges = gr.CheckboxGroup([], label="Judge battles", scale=3)
        baseline = gr.Dropdown(["sft"], value="sft", label="Baseline for win rates", allow_custom_value=True, scale=2)
        anchor = gr.Dropdown(["sft"], value="sft", label="Anchor (rated 1000)", allow_custom_value=True, scale=2)
        rounds = gr.Number(value=1000, precision=0, minimum=0, maximum=evaluation.MAX_BOOTSTRAP,
                           label="Bootstrap rounds", scale=1)
        arena_file = gr.File(label="+ battles file (Arena rows)", file_types=[".jsonl", ".json", ".csv", ".parquet"],
                             scale=2, height=90)
        refresh = gr.Button("Refresh", variant="primary", scale=1, elem_id="dashboard-refresh")
    with gr.Row():
        category = gr.Dropdown([ALL_CATEGORIES], value=ALL_CATEGORIES, label="Prompt category", scale=2)
        style_control = gr.Checkbox(value=False, scale=3, label="Style control: rate at equal answer length, headers, "
                                                                "lists and bold (Chatbot Arena's)")
    summary = gr.Markdown(elem_id="dashboard-summary")
    leaderboard = gr.Dataframe(headers=LEADERBOARD_COLUMNS, label="Leaderboard", interactive=False,
                               elem_id="dashboard-leaderboard")
    with gr.Row():
        rating_plot = gr.Plot(show_label=False)
        timeline_plot = gr.Plot(show_label=False)
    with gr.Row():
        fraction_plot = gr.Plot(show_label=False)
        count_plot = gr.Plot(show_label=False)
        predicted_plot = gr.Plot(show_label=False)
    style_table = gr.Dataframe(headers=STYLE_COLUMNS, interactive=False, elem_id="dashboard-style",
                               label="Style coefficients (with style control): the log-odds of winning, and its Elo, "
                                     "that a typical difference in each element buys; 95% bootstrap interval")
    win_rates = gr.Dataframe(headers=WIN_RATE_COLUMNS, label="Win rate against the baseline: ties ½, 95% Wilson "
                             "interval; LC = length-controlled (AlpacaEval 2): the win rate predicted at equal answer "
                             "length, bootstrap interval; mean response length in characters next to it",
                             interactive=False, elem_id="dashboard-win-rates")
    gr.Markdown("### Checkpoints\nHeld-out metrics come from each run's record; KL(π_θ ‖ π_ref) is estimated "
                "on the fixed prompt set from samples at temperature 1.")
    records = gr.Dataframe(headers=CHECKPOINT_COLUMNS, interactive=False, elem_id="dashboard-checkpoints")
    with gr.Row():
        kl_plot = gr.Plot(show_label=False, scale=2)
        rm_kl_plot = gr.Plot(show_label=False, scale=2)
        with gr.Column(scale=1):
            kl_reward_model = gr.Dropdown([], value=None, allow_custom_value=True,
                                          label="Score the samples with a reward model (optional)")
            kl_button = gr.Button("Estimate KL for every checkpoint")
            kl_status = gr.Markdown()
            tables_button = gr.Button("Download tables", elem_id="dashboard-download")
            downloads = gr.File(label="Every table, CSV and JSON (zip)", interactive=False,
                                elem_id="dashboard-download-file")

    with gr.Accordion("Automated comparison: let a judge vote", open=False):
        with gr.Row():
            judge_models = gr.Dropdown(list(state.slot_catalog()), value=["policy", "sft"], multiselect=True,
                                       label="Models (2 or more)", scale=3)
            prompt_source = gr.Dropdown([evaluation.BUILT_IN_PROMPTS], value=evaluation.BUILT_IN_PROMPTS,
                                        label="Prompts", scale=2)
            max_new = gr.Slider(8, 512, value=96, step=8, label="Max new tokens", scale=1)
        with gr.Row():
            judge_kind = gr.Dropdown(list(JUDGES), value="shorter wins", label="Judge", scale=2)
            phrase = gr.Textbox(label="Phrase (contains / avoids)", scale=2)
            rm_pick = gr.Dropdown([], label="Reward model", scale=2)
            llm_path = gr.Textbox(value="", label="LLM judge: a local HF model folder or .gguf file (on the server)",
                                  scale=3)
            judge_button = gr.Button("Run judge", variant="primary", scale=1)
        gr.Markdown("Every judge sees each pair in both orders, (A, B) and (B, A): a battle is a win only when "
                    "both orders pick the same model, a tie otherwise (MT-Bench's rule). The LLM judge answers "
                    "from its next-token probabilities of “A”, “B” and “tie”.")
        judge_status = gr.Markdown()
    judge_table = gr.Dataframe(headers=JUDGE_COLUMNS, interactive=False, elem_id="dashboard-judges",
                               label="Judges: position consistency (share of pairs judged alike in both orders; 1 = no "
                                     "position bias) and agreement with the human majority on the same prompts and "
                                     "models, with Cohen's κ (0 = chance, 1 = perfect)")
    with gr.Accordion("Reward model: Bradley–Terry on the votes, usable as a judge", open=False):
        gr.Markdown("The SFT model with LoRA and a scalar head, trained with ℓ = −log σ(r(x, y⁺) − r(x, y⁻)) on the "
                    "same pairs DPO uses; held-out pairs are never trained on.")
        with gr.Row():
            rm_steps = gr.Number(value=0, precision=0, minimum=0, label="Steps (0 = 3 epochs)")
            rm_lr = gr.Number(value=RewardConfig.lr, minimum=0, label="Learning rate")
            rm_heldout = gr.Slider(0, 0.5, value=RewardConfig.heldout, step=0.05, label="Held-out fraction")
            rm_button = gr.Button("Train reward model")
        rm_status = gr.Markdown()
        rm_table = gr.Dataframe(headers=REWARD_MODEL_COLUMNS, interactive=False,
                                label="Reward models: held-out accuracy (ties ½) and margin r⁺ − r⁻")

    def choices() -> dict:
        """What the pickers offer now: stored judges, models (new checkpoints), prompt sets, reward models."""
        return {judges: gr.CheckboxGroup(choices=evaluation.judge_names(state)),
                judge_models: gr.Dropdown(choices=list(state.slot_catalog())),
                prompt_source: gr.Dropdown(choices=evaluation.judge_sources(state)),
                rm_pick: gr.Dropdown(choices=training.reward_models(state)),
                kl_reward_model: gr.Dropdown(choices=training.reward_models(state)),
                rm_table: reward_model_table(training.reward_model_folders(state))}

    def report_for(human_v: bool, judges_v: list[str], baseline_v: str, anchor_v: str, rounds_v: float,
                   file: str | None, category_v: str | None, style_v: bool) -> Report:
        return evaluation.dashboard_report(state, human_v, judges_v or [], baseline_v or "sft", anchor_v or None,
                                           int(rounds_v or 0), Path(file) if file else None,
                                           None if category_v in (None, "", ALL_CATEGORIES) else category_v,
                                           bool(style_v))

    @user_errors
    def show(human_v: bool, judges_v: list[str], baseline_v: str, anchor_v: str, rounds_v: float,
             file: str | None, category_v: str | None = ALL_CATEGORIES, style_v: bool = False) -> dict:
        report = report_for(human_v, judges_v, baseline_v, anchor_v, rounds_v, file, category_v, style_v)
        models = list(report.ratings.leaderboard.index) if report.ratings else ["sft"]
        rating, fraction, count, predicted = rating_figures(report)
        return {
            summary: report.message if report.n_battles else f"**{NO_BATTLES}.**",
            leaderboard: report.leaderboard, win_rates: win_rate_display(report.win_rates),
            records: report.checkpoints, timeline_plot: timeline_figure(report.timeline, baseline_v or "sft"),
            judge_table: report.judges, style_table: report.style,
            category: gr.Dropdown(choices=[ALL_CATEGORIES, *report.categories]),
            kl_plot: reward_kl_figure(report.checkpoints),
            rm_kl_plot: reward_model_kl_figure(report.checkpoints, state.kl_estimates),
            judges: gr.CheckboxGroup(choices=evaluation.judge_names(state), value=judges_v),
            baseline: gr.Dropdown(choices=models), anchor: gr.Dropdown(choices=models),
            rating_plot: rating, fraction_plot: fraction, count_plot: count, predicted_plot: predicted,
        }

    inputs = [human, judges, baseline, anchor, rounds, arena_file, category, style_control]
    outputs = [summary, leaderboard, win_rates, records, timeline_plot, kl_plot, rm_kl_plot, judges, baseline, anchor,
               rating_plot, fraction_plot, count_plot, predicted_plot, judge_table, style_table, category]
    refresh.click(show, inputs, outputs, api_name="dashboard")
    # Opening the tab computes the report (no Refresh needed); the page load only fills the pickers,
    # so a hundred voters loading the page do not each run a bootstrap nobody looks at.
    tab.select(show, inputs, outputs, api_visibility="private")
    choice_outputs = [judges, judge_models, prompt_source, rm_pick, kl_reward_model, rm_table]
    gr.on(None, choices, None, choice_outputs, api_visibility="private")  # no triggers: at page load
    tab.select(choices, None, choice_outputs, api_visibility="private")

    @user_errors
    def download(human_v: bool, judges_v: list[str], baseline_v: str, anchor_v: str, rounds_v: float,
                 file: str | None, category_v: str | None = ALL_CATEGORIES, style_v: bool = False) -> str:
        report = report_for(human_v, judges_v, baseline_v, anchor_v, rounds_v, file, category_v, style_v)
        return str(evaluation.dashboard_downloads(state, report))

    tables_button.click(download, inputs, downloads, api_name="dashboard_tables")

    @user_errors
    def estimate(reward_model: str | None = None, request: gr.Request = None, progress=gr.Progress()) -> str:
        session.require_admin(state, request, "estimating KL")
        found = evaluation.estimate_kl(state, lambda done, total, what: progress((done, total), desc=what),
                                       reward_model=reward_model or None)
        return "\n\n".join(f"`{name}`: KL ≈ {kl.mean:.3f} ± {kl.stderr:.3f} nats ({kl.n} samples)"
                           + ("" if kl.reward_mean is None else
                              f", mean reward {kl.reward_mean:+.3f} ± {kl.reward_stderr or 0:.3f}")
                           for name, kl in found.items())

    kl_button.click(estimate, kl_reward_model, kl_status, api_name="estimate_kl", concurrency_id="model").success(
        show, inputs, outputs, api_visibility="private")

    @user_errors
    def judge(models_v: list[str], source: str, max_new_v: float, kind: str, phrase_v: str, rm: str | None,
              llm_v: str, request: gr.Request, progress=gr.Progress()) -> dict:
        session.require_admin(state, request, "running a judge")
        spec = JUDGES.get(kind)
        if spec is None:
            raise PlaygroundError(f"unknown judge {kind!r}; expected one of {', '.join(JUDGES)}")
        if spec == "reward-model" and rm not in training.reward_models(state):
            raise PlaygroundError("pick a trained reward model (train one below)")
        judged = evaluation.app_judge(state, spec, phrase_v or "",
                                      training.reward_model_dir(state) / rm if spec == "reward-model" else None,
                                      llm_v or "")
        battles = evaluation.run_judge(
            state, evaluation.judge_prompts(state, source), models_v or [], judged,
            GenerationSettings(max_new_tokens=int(max_new_v)),
            progress=lambda done, total, what: progress((done, total), desc=what, unit="prompts"))
        consistent = sum(bool((b.details or {}).get("consistent")) for b in battles)
        return {judge_status: f"{len(battles)} battles judged by `{judged.name}` in both orders and stored; the "
                              f"orders agreed on {consistent} of {len(battles)}. Tick it above to include them "
                              "in the leaderboard.",
                judges: gr.CheckboxGroup(choices=evaluation.judge_names(state))}

    judge_button.click(judge, [judge_models, prompt_source, max_new, judge_kind, phrase, rm_pick, llm_path],
                       [judge_status, judges], api_name="run_judge", concurrency_id="model")

    @user_errors
    def train_rm(steps_v: float, lr_v: float, heldout_v: float, request: gr.Request, progress=gr.Progress()) -> dict:
        session.require_admin(state, request, "training a reward model")
        cfg = RewardConfig(steps=int(steps_v or 0) or None, lr=float(lr_v or 0), heldout=float(heldout_v))
        result = training.train_reward_model(
            state, cfg, lambda step, total, m: progress((step, total), desc=f"loss {m['loss']:.3f}", unit="steps"))
        folder = result.folder
        before, after = result.heldout_before, result.heldout_after
        held = (f"held-out ({after.pairs} pairs) accuracy **{before.accuracy:.2f} → {after.accuracy:.2f}**"
                if before and after else "no held-out pairs (fewer than 5)")
        return {rm_status: f"Trained `{folder.name}`: {len(result.steps)} steps on {result.train_pairs} "
                           f"pairs, {held}. Pick it as the judge above.",
                rm_pick: gr.Dropdown(choices=training.reward_models(state),
                                     value=folder.name),
                rm_table: reward_model_table(training.reward_model_folders(state))}

    rm_button.click(train_rm, [rm_steps, rm_lr, rm_heldout], [rm_status, rm_pick, rm_table],
                    api_name="train_reward_model", concurrency_id="train")
