"""The Dashboard tab: ratings with intervals, win rates against a baseline, checkpoints over time,
KL to the reference, judges and the reward model. Numbers come from `evals` through the
application layer (`service.evaluation`, `service.training`); this file only wires. The report is
computed when the tab is opened and after a KL estimate or a judge run; downloads only on request."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from evals.cleaning import RULES
from evals.dashboard import (
    ALL_CATEGORIES,
    CHECKPOINT_COLUMNS,
    COMPARE_COLUMNS,
    JUDGE_COLUMNS,
    LEADERBOARD_COLUMNS,
    NO_BATTLES,
    QUALITY_COLUMNS,
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
from ui.errors import refusals

JUDGES = {"shorter wins": "shorter", "longer wins": "longer", "contains the phrase wins": "contains",
          "avoids the phrase wins": "avoids", "reward model": "reward-model", "LLM judge (a local model)": "llm"}
REWARD_MODEL_COLUMNS = ["reward model", "created", "pairs", "held-out pairs", "steps", "held-out acc before",
                        "held-out acc after", "held-out margin after"]
FRACTION_TITLE = "Win fraction, row vs column (ties ½)"
COUNT_TITLE = "Battles between row and column"
PREDICTED_TITLE = "Predicted P(row beats column) from the ratings"
CLEANING_RULES = [("identity leaks", "identity"), ("outlier voters", "outliers"),
                  ("duplicate prompts, repeat votes", "duplicates"), ("over the daily cap", "caps")]


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


@dataclass(frozen=True)
class ReportControls:
    """What the report is computed from (`/dashboard`'s inputs, in `inputs`' order)."""

    human: gr.Checkbox
    judges: gr.CheckboxGroup
    baseline: gr.Dropdown
    anchor: gr.Dropdown
    rounds: gr.Number
    arena_file: gr.File
    category: gr.Dropdown
    style_control: gr.Checkbox
    clean: gr.CheckboxGroup
    refresh: gr.Button

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.human, self.judges, self.baseline, self.anchor, self.rounds, self.arena_file, self.category,
                self.style_control, self.clean]


@dataclass(frozen=True)
class ReportViews:
    summary: gr.Markdown
    leaderboard: gr.Dataframe
    rating_plot: gr.Plot
    timeline_plot: gr.Plot
    fraction_plot: gr.Plot
    count_plot: gr.Plot
    predicted_plot: gr.Plot
    style_table: gr.Dataframe
    win_rates: gr.Dataframe
    records: gr.Dataframe
    kl_plot: gr.Plot
    rm_kl_plot: gr.Plot
    quality: gr.Dataframe
    compare: gr.Dataframe


@dataclass(frozen=True)
class CheckpointTools:
    """Beside the checkpoints: KL estimates (optionally with a reward model's scores) and the zip."""

    reward_model: gr.Dropdown
    kl_button: gr.Button
    kl_status: gr.Markdown
    tables_button: gr.Button
    downloads: gr.File


@dataclass(frozen=True)
class JudgeForm:
    models: gr.Dropdown
    prompt_source: gr.Dropdown
    max_new: gr.Slider
    kind: gr.Dropdown
    phrase: gr.Textbox
    reward_model: gr.Dropdown
    llm_path: gr.Textbox
    button: gr.Button
    status: gr.Markdown
    table: gr.Dataframe


@dataclass(frozen=True)
class RewardModelForm:
    steps: gr.Number
    lr: gr.Number
    heldout: gr.Slider
    button: gr.Button
    status: gr.Markdown
    table: gr.Dataframe


@dataclass(frozen=True)
class DashboardPage:
    controls: ReportControls
    views: ReportViews
    tools: CheckpointTools
    judge: JudgeForm
    reward_model: RewardModelForm


def build_dashboard_tab(state: AppState, tab: gr.Tab) -> None:
    gr.Markdown("Ratings from battles: human votes (the policy is rated as the checkpoint it was serving) and, if "
                "ticked, judge battles. Bradley–Terry maximum likelihood on the Elo scale (400·log₁₀ odds), a tie "
                "half a win each way, intervals from resampling votes.")
    controls = controls_section()
    views, tools = report_section()
    page = DashboardPage(controls, views, tools, judge_section(state), reward_model_section())
    show = wire_report(state, tab, page)
    wire_checkpoint_tools(state, page, show)
    wire_judge(state, page)
    wire_reward_model(state, page)


def controls_section() -> ReportControls:
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
        clean = gr.CheckboxGroup(CLEANING_RULES, value=list(RULES), scale=4, elem_id="dashboard-clean",
                                 label="Clean: leave out the battles these rules flag (Chatbot Arena's; see Data "
                                       "quality)")
    return ReportControls(human, judges, baseline, anchor, rounds, arena_file, category, style_control, clean,
                          refresh)


def report_section() -> tuple[ReportViews, CheckpointTools]:
    summary = gr.Markdown(elem_id="dashboard-summary")
    leaderboard = gr.Dataframe(headers=LEADERBOARD_COLUMNS, label="Leaderboard", interactive=False,
                               elem_id="dashboard-leaderboard")
    with gr.Row():
        rating_plot, timeline_plot = gr.Plot(show_label=False), gr.Plot(show_label=False)
    with gr.Row():
        fraction_plot, count_plot, predicted_plot = (gr.Plot(show_label=False) for _ in range(3))
    style_table = gr.Dataframe(headers=STYLE_COLUMNS, interactive=False, elem_id="dashboard-style",
                               label="Style coefficients (with style control): the log-odds of winning, and its Elo, "
                                     "that a typical difference in each element buys; 95% bootstrap interval")
    win_rates = gr.Dataframe(headers=WIN_RATE_COLUMNS, label="Win rate against the baseline: ties ½, 95% Wilson "
                             "interval; LC = length-controlled (AlpacaEval 2): the win rate predicted at equal answer "
                             "length from this pair's battles, bootstrap interval; joint LC = the same from one "
                             "length coefficient fitted over all battles (trust it where the note says the "
                             "per-pair fit extrapolates); mean response length in characters",
                             interactive=False, elem_id="dashboard-win-rates")
    quality, compare = quality_section()
    gr.Markdown("### Checkpoints\nHeld-out metrics come from each run's record; KL(π_θ ‖ π_ref) is estimated "
                "on the fixed prompt set from samples at temperature 1.")
    records = gr.Dataframe(headers=CHECKPOINT_COLUMNS, interactive=False, elem_id="dashboard-checkpoints")
    with gr.Row():
        kl_plot, rm_kl_plot = gr.Plot(show_label=False, scale=2), gr.Plot(show_label=False, scale=2)
        with gr.Column(scale=1):
            tools = CheckpointTools(
                gr.Dropdown([], value=None, allow_custom_value=True,
                            label="Score the samples with a reward model (optional)"),
                gr.Button("Estimate KL for every checkpoint"), gr.Markdown(),
                gr.Button("Download tables", elem_id="dashboard-download"),
                gr.File(label="Every table, CSV and JSON (zip)", interactive=False, elem_id="dashboard-download-file"))
    return ReportViews(summary, leaderboard, rating_plot, timeline_plot, fraction_plot, count_plot, predicted_plot,
                       style_table, win_rates, records, kl_plot, rm_kl_plot, quality, compare), tools


def quality_section() -> tuple[gr.Dataframe, gr.Dataframe]:
    gr.Markdown("### Data quality\nWhat Chatbot Arena's cleaning rules flagged (README, Votes you can trust). The "
                "battles of the rules ticked in *Clean* are left out of the leaderboard, the win rates and the "
                "judges' agreement. Nothing is deleted: untick a rule to rate its battles again.")
    with gr.Row():
        quality = gr.Dataframe(headers=QUALITY_COLUMNS, interactive=False, elem_id="dashboard-quality", scale=3,
                               label="Flagged: per identity word, voter (with the test's evidence), prompt")
        compare = gr.Dataframe(headers=COMPARE_COLUMNS, interactive=False, elem_id="dashboard-compare", scale=2,
                               label="Ratings with and without the flagged battles (point fits)")
    return quality, compare


def judge_section(state: AppState) -> JudgeForm:
    with gr.Accordion("Automated comparison: let a judge vote", open=False):
        with gr.Row():
            models = gr.Dropdown(list(state.slot_catalog()), value=["policy", "sft"], multiselect=True,
                                 label="Models (2 or more)", scale=3)
            prompt_source = gr.Dropdown([evaluation.BUILT_IN_PROMPTS], value=evaluation.BUILT_IN_PROMPTS,
                                        label="Prompts", scale=2)
            max_new = gr.Slider(8, 512, value=96, step=8, label="Max new tokens", scale=1)
        with gr.Row():
            kind = gr.Dropdown(list(JUDGES), value="shorter wins", label="Judge", scale=2)
            phrase = gr.Textbox(label="Phrase (contains / avoids)", scale=2)
            reward_model = gr.Dropdown([], label="Reward model", scale=2)
            llm_path = gr.Textbox(value="", label="LLM judge: a local HF model folder or .gguf file (on the server)",
                                  scale=3)
            button = gr.Button("Run judge", variant="primary", scale=1)
        gr.Markdown("Every judge sees each pair in both orders, (A, B) and (B, A): a battle is a win only when "
                    "both orders pick the same model, a tie otherwise (MT-Bench's rule). The LLM judge answers "
                    "from its next-token probabilities of “A”, “B” and “tie”.")
        status = gr.Markdown()
    table = gr.Dataframe(headers=JUDGE_COLUMNS, interactive=False, elem_id="dashboard-judges",
                         label="Judges: position consistency (share of pairs judged alike in both orders; 1 = no "
                               "position bias) and agreement with the human majority on the same prompts and "
                               "models, with Cohen's κ (0 = chance, 1 = perfect)")
    return JudgeForm(models, prompt_source, max_new, kind, phrase, reward_model, llm_path, button, status, table)


def reward_model_section() -> RewardModelForm:
    with gr.Accordion("Reward model: Bradley–Terry on the votes, usable as a judge", open=False):
        gr.Markdown("The SFT model with LoRA and a scalar head, trained with ℓ = −log σ(r(x, y⁺) − r(x, y⁻)) on the "
                    "same pairs DPO uses; held-out pairs are never trained on.")
        with gr.Row():
            steps = gr.Number(value=0, precision=0, minimum=0, label="Steps (0 = 3 epochs)")
            lr = gr.Number(value=RewardConfig.lr, minimum=0, label="Learning rate")
            heldout = gr.Slider(0, 0.5, value=RewardConfig.heldout, step=0.05, label="Held-out fraction")
            button = gr.Button("Train reward model")
        status = gr.Markdown()
        table = gr.Dataframe(headers=REWARD_MODEL_COLUMNS, interactive=False,
                             label="Reward models: held-out accuracy (ties ½) and margin r⁺ − r⁻")
    return RewardModelForm(steps, lr, heldout, button, status, table)


def report_query(human_v: bool, judges_v: list[str], baseline_v: str, anchor_v: str, rounds_v: float,
                 file: str | None, category_v: str | None, style_v: bool,
                 clean_v: Sequence[str] | None) -> evaluation.ReportQuery:
    """The report the controls ask for (every category for the "all" choice)."""
    return evaluation.ReportQuery(bool(human_v), tuple(judges_v or ()), baseline_v or "sft", anchor_v or None,
                                  int(rounds_v or 0), Path(file) if file else None,
                                  None if category_v in (None, "", ALL_CATEGORIES) else category_v, bool(style_v),
                                  tuple(clean_v or ()))


def report_view(state: AppState, page: DashboardPage, report: Report, judges_v: list[str], baseline_v: str) -> dict:
    """`report` on screen: tables, plots, and the pickers it gives choices to."""
    v, c = page.views, page.controls
    models = list(report.ratings.leaderboard.index) if report.ratings else ["sft"]
    rating, fraction, count, predicted = rating_figures(report)
    return {
        v.summary: report.message if report.n_battles else f"**{NO_BATTLES}.**",
        v.leaderboard: report.leaderboard, v.win_rates: win_rate_display(report.win_rates),
        v.records: report.checkpoints, v.timeline_plot: timeline_figure(report.timeline, baseline_v or "sft"),
        page.judge.table: report.judges, v.style_table: report.style,
        c.category: gr.Dropdown(choices=[ALL_CATEGORIES, *report.categories]),
        v.kl_plot: reward_kl_figure(report.checkpoints),
        v.rm_kl_plot: reward_model_kl_figure(report.checkpoints, state.kl_estimates),
        c.judges: gr.CheckboxGroup(choices=evaluation.judge_names(state), value=judges_v),
        c.baseline: gr.Dropdown(choices=models), c.anchor: gr.Dropdown(choices=models),
        v.rating_plot: rating, v.fraction_plot: fraction, v.count_plot: count, v.predicted_plot: predicted,
        v.quality: report.quality, v.compare: report.compare,
    }


def report_outputs(page: DashboardPage) -> list[gr.components.Component]:
    """`/dashboard`'s outputs, in order."""
    v, c = page.views, page.controls
    return [v.summary, v.leaderboard, v.win_rates, v.records, v.timeline_plot, v.kl_plot, v.rm_kl_plot, c.judges,
            c.baseline, c.anchor, v.rating_plot, v.fraction_plot, v.count_plot, v.predicted_plot, page.judge.table,
            v.style_table, c.category, v.quality, v.compare]


def choices_view(state: AppState, page: DashboardPage) -> dict:
    """What the pickers offer now: stored judges, models (new checkpoints), prompt sets, reward models.
    Updates, not new components: `wire_report` reads the keys while the page is built, where a new
    component would be drawn at the foot of the page."""
    return {page.controls.judges: gr.update(choices=evaluation.judge_names(state)),
            page.judge.models: gr.update(choices=list(state.slot_catalog())),
            page.judge.prompt_source: gr.update(choices=evaluation.judge_sources(state)),
            page.judge.reward_model: gr.update(choices=training.reward_models(state)),
            page.tools.reward_model: gr.update(choices=training.reward_models(state)),
            page.reward_model.table: reward_model_table(training.reward_model_folders(state))}


def wire_report(state: AppState, tab: gr.Tab, page: DashboardPage) -> Callable[..., dict]:
    """`/dashboard` on Refresh and on opening the tab, the pickers' choices at page load; returns the
    report's handler (a KL estimate shows its result through it)."""
    @refusals
    def show(human_v: bool, judges_v: list[str], baseline_v: str, anchor_v: str, rounds_v: float,
             file: str | None, category_v: str | None = ALL_CATEGORIES, style_v: bool = False,
             clean_v: Sequence[str] | None = RULES, request: gr.Request = None) -> dict:
        query = report_query(human_v, judges_v, baseline_v, anchor_v, rounds_v, file, category_v, style_v, clean_v)
        report = evaluation.dashboard_report(state, query, session.username(request))
        return report_view(state, page, report, judges_v, baseline_v)

    inputs, outputs = page.controls.inputs, report_outputs(page)
    page.controls.refresh.click(show, inputs, outputs, api_name="dashboard")
    # Opening the tab computes the report (no Refresh needed); the page load only fills the pickers,
    # so a hundred voters loading the page do not each run a bootstrap nobody looks at.
    tab.select(show, inputs, outputs, api_visibility="private")
    choice_outputs = list(choices_view(state, page))

    def choices() -> dict:
        return choices_view(state, page)

    gr.on(None, choices, None, choice_outputs, api_visibility="private")  # no triggers: at page load
    tab.select(choices, None, choice_outputs, api_visibility="private")
    return show


def wire_checkpoint_tools(state: AppState, page: DashboardPage, show: Callable[..., dict]) -> None:
    """`/dashboard_tables` (the zip) and `/estimate_kl` (then the report again, with the estimates)."""
    tools, inputs = page.tools, page.controls.inputs

    @refusals
    def download(human_v: bool, judges_v: list[str], baseline_v: str, anchor_v: str, rounds_v: float,
                 file: str | None, category_v: str | None = ALL_CATEGORIES, style_v: bool = False,
                 clean_v: Sequence[str] | None = RULES, request: gr.Request = None) -> str:
        query = report_query(human_v, judges_v, baseline_v, anchor_v, rounds_v, file, category_v, style_v, clean_v)
        return str(evaluation.dashboard_downloads(state, query, session.username(request)))

    tools.tables_button.click(download, inputs, tools.downloads, api_name="dashboard_tables")

    @refusals
    def estimate(reward_model: str | None = None, request: gr.Request = None, progress=gr.Progress()) -> str:
        session.require_admin(state, request, "estimating KL")
        found = evaluation.estimate_kl(state, lambda done, total, what: progress((done, total), desc=what),
                                       reward_model=reward_model or None)
        return "\n\n".join(f"`{name}`: KL ≈ {kl.mean:.3f} ± {kl.stderr:.3f} nats ({kl.n} samples)"
                            + ("" if kl.reward_mean is None else
                               f", mean reward {kl.reward_mean:+.3f} ± {kl.reward_stderr or 0:.3f}")
                            for name, kl in found.items())

    tools.kl_button.click(estimate, tools.reward_model, tools.kl_status, api_name="estimate_kl",
                          concurrency_id="model").success(show, inputs, report_outputs(page), api_visibility="private")


def wire_judge(state: AppState, page: DashboardPage) -> None:
    """`/run_judge`: generate on the prompts, let the judge vote in both orders, store the battles."""
    form = page.judge

    @refusals
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
        return {form.status: f"{len(battles)} battles judged by `{judged.name}` in both orders and stored; the "
                             f"orders agreed on {consistent} of {len(battles)}. Tick it above to include them "
                             "in the leaderboard.",
                page.controls.judges: gr.CheckboxGroup(choices=evaluation.judge_names(state))}

    form.button.click(judge, [form.models, form.prompt_source, form.max_new, form.kind, form.phrase,
                              form.reward_model, form.llm_path], [form.status, page.controls.judges],
                      api_name="run_judge", concurrency_id="model")


def wire_reward_model(state: AppState, page: DashboardPage) -> None:
    """`/train_reward_model`: Bradley–Terry on the votes; the new model is picked as the judge's."""
    form = page.reward_model

    @refusals
    def train_rm(steps_v: float, lr_v: float, heldout_v: float, request: gr.Request, progress=gr.Progress()) -> dict:
        session.require_admin(state, request, "training a reward model")
        cfg = RewardConfig(steps=int(steps_v or 0) or None, lr=float(lr_v or 0), heldout=float(heldout_v))
        result = training.train_reward_model(
            state, cfg, lambda step, total, m: progress((step, total), desc=f"loss {m['loss']:.3f}", unit="steps"))
        before, after = result.heldout_before, result.heldout_after
        held = (f"held-out ({after.pairs} pairs) accuracy **{before.accuracy:.2f} → {after.accuracy:.2f}**"
                if before and after else "no held-out pairs (fewer than 5)")
        return {form.status: f"Trained `{result.folder.name}`: {len(result.steps)} steps on {result.train_pairs} "
                             f"pairs, {held}. Pick it as the judge above.",
                page.judge.reward_model: gr.Dropdown(choices=training.reward_models(state), value=result.folder.name),
                form.table: reward_model_table(training.reward_model_folders(state))}

    form.button.click(train_rm, [form.steps, form.lr, form.heldout],
                      [form.status, page.judge.reward_model, form.table], api_name="train_reward_model",
                      concurrency_id="train")
