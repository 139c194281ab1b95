"""The Vote tab's admin panel: import a prompt set, choose its models and pre-generate, set the
overlap, overall progress, agreement between voters, and the merged export. Every action here
needs the admin role (everyone, when the app runs without logins)."""

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from evals.agreement import PositionBias
from evals.annotation import AgreementReport
from playground.core.errors import PlaygroundError
from playground.data.exchange import EXPORT_FORMATS
from playground.data.merge import TIE_POLICIES
from playground.data.prompt_sets import PromptSet
from playground.data.queue import SetProgress
from playground.inference.settings import GenerationSettings
from service import data, prompt_sets
from service.pregenerate import choose_models, pregenerate_steps
from service.state import AppState
from ui import session
from ui.errors import refusals


def progress_markdown(name: str, overlap: int, progress: SetProgress) -> str:
    return (f"**{name}**: {progress.complete} of {progress.prompts} prompts have their {overlap} vote(s); "
            f"{progress.votes} votes in all; responses ready for {progress.ready} of {progress.prompts} prompts.")


def same_weights_note(state: AppState, pset: PromptSet) -> str:
    """A warning when two of the set's models are rated as one (a fresh policy is the SFT model):
    votes between them say nothing about either."""
    rated = [state.rated_name(m) for m in pset.models]
    twins = sorted({m for m, r in zip(pset.models, rated, strict=True) if rated.count(r) > 1})
    return (f" Note: {' and '.join(twins)} have the same weights now (rated as `{rated[pset.models.index(twins[0])]}`"
            "): votes between their responses do not count on the leaderboard." if twins else "")


def votes_by_voter(progress: SetProgress) -> pd.DataFrame:
    return pd.DataFrame(list(progress.by_voter.items()), columns=["voter", "votes"])


def alpha_markdown(report: AgreementReport) -> str:
    """Krippendorff's alpha with what it rests on, in words."""
    a = report.alpha
    value = f"undefined ({a.reason})" if a.alpha is None else f"**{a.alpha:.3f}**"
    return (f"Krippendorff's α (nominal over four categories: one model wins, the other wins, tie, both bad; "
            f"for rankings, each pair of responses): {value}, based on **{a.n_items} items** with at least two votes "
            f"({a.n_values} votes; {report.votes} queue votes in this set). 1 = perfect agreement, "
            "0 = chance level, below 0 = systematic disagreement.")


def agreement_table(report: AgreementReport) -> pd.DataFrame:
    rows = [{"voter": voter, "agrees with majority": agree, "items counted": total,
             "rate": round(agree / total, 3) if total else None}
            for voter, (agree, total) in report.by_voter.items()]
    return pd.DataFrame(rows, columns=["voter", "agrees with majority", "items counted", "rate"])


def disputed_table(report: AgreementReport) -> pd.DataFrame:
    rows = [{"item": d.item, "votes": d.n_votes, "disagreement": round(d.disagreement, 3),
             "labels": ", ".join(f"{label} ×{n}" for label, n in d.counts)} for d in report.disputed]
    return pd.DataFrame(rows, columns=["item", "votes", "disagreement", "labels"])


def _bias_row(who: str, bias: PositionBias) -> dict:
    interval = f"{bias.ci_low:.2f} – {bias.ci_high:.2f}" if bias.ci_low is not None else "—"
    return {"voter": who, "left wins": bias.left_wins, "decided pairs": bias.decided, "votes": bias.n_votes,
            "left-win rate": round(bias.rate, 3) if bias.rate is not None else None, "95% interval": interval,
            "note": bias.note or ""}


def bias_table(report: AgreementReport) -> pd.DataFrame:
    rows = [_bias_row("all voters", report.position.overall)]
    rows += [_bias_row(voter, bias) for voter, bias in report.position.by_voter.items()]
    return pd.DataFrame(rows, columns=["voter", "left wins", "decided pairs", "votes", "left-win rate", "95% interval",
                                       "note"])


@dataclass(frozen=True)
class ImportForm:
    upload: gr.File
    name: gr.Textbox
    overlap: gr.Number
    from_preferences: gr.Checkbox
    button: gr.Button


@dataclass(frozen=True)
class ModelsForm:
    """The set's models and generation settings, pre-generation or live, and the overlap."""

    models: gr.Dropdown
    temperature: gr.Number
    max_new: gr.Number
    seed: gr.Number
    pre_button: gr.Button
    live_button: gr.Button
    cancel_button: gr.Button
    overlap: gr.Number
    overlap_button: gr.Button

    @property
    def settings(self) -> list[gr.components.Component]:
        return [self.models, self.temperature, self.max_new, self.seed]


@dataclass(frozen=True)
class Reports:
    """Overall progress, agreement between voters, and the merged export."""

    progress_button: gr.Button
    progress_md: gr.Markdown
    progress_df: gr.Dataframe
    agreement_button: gr.Button
    alpha_md: gr.Markdown
    voters_df: gr.Dataframe
    bias_df: gr.Dataframe
    disputed_df: gr.Dataframe
    merge_format: gr.Radio
    ties: gr.Radio
    merge_button: gr.Button
    merged_file: gr.File


def build_vote_admin(state: AppState, set_pick: gr.Dropdown) -> None:
    with gr.Accordion("Admin: prompt sets, pre-generation, progress, agreement", open=False):
        status = gr.Markdown()
        form = import_section()
        models = models_section(state)
        reports = reports_section()
    wire_import(state, form, status, set_pick)
    wire_models(state, models, status, set_pick)
    wire_reports(state, reports, status, set_pick)


def import_section() -> ImportForm:
    gr.Markdown("#### Import a prompt set\nJSONL, CSV or Parquet: `prompt` (text, or a message list), "
                "optional `id` and `category`; or the prompts of a TRL preference file.")
    with gr.Row():
        upload = gr.File(label="Prompt file", file_types=[".jsonl", ".json", ".csv", ".parquet"], scale=2)
        with gr.Column(scale=2):
            name = gr.Textbox(label="Set name")
            overlap = gr.Number(value=1, precision=0, minimum=1, label="Votes per prompt (overlap)")
            from_preferences = gr.Checkbox(label="The file is TRL preference data: take its prompts")
            button = gr.Button("Import prompt set", elem_id="import-prompts")
    return ImportForm(upload, name, overlap, from_preferences, button)


def models_section(state: AppState) -> ModelsForm:
    catalog = list(state.slot_catalog())
    defaults = GenerationSettings()
    gr.Markdown("#### Models and pre-generation\nThe chosen models' responses are what voters compare "
                "(k = how many). Pre-generate so voters never wait, or let the queue generate live.")
    with gr.Row():
        models = gr.Dropdown(catalog, value=catalog[:2], multiselect=True, label="Models (2–4)", scale=3)
        temperature = gr.Number(value=defaults.temperature, minimum=0, label="Temperature")
        max_new = gr.Number(value=defaults.max_new_tokens, precision=0, minimum=1, label="Max new tokens")
        seed = gr.Number(value=defaults.seed, precision=0, minimum=0, label="Base seed")
    with gr.Row():
        pre_button = gr.Button("Pre-generate", variant="primary", elem_id="pregenerate")
        live_button = gr.Button("Use these models, generate live")
        cancel_button = gr.Button("Stop pre-generating", variant="stop")
    with gr.Row():
        overlap = gr.Number(value=1, precision=0, minimum=1, label="Votes per prompt (overlap)", scale=1)
        overlap_button = gr.Button("Set overlap", scale=0)
    return ModelsForm(models, temperature, max_new, seed, pre_button, live_button, cancel_button, overlap,
                      overlap_button)


def reports_section() -> Reports:
    gr.Markdown("#### Progress")
    progress_button = gr.Button("Show overall progress")
    progress_md = gr.Markdown()
    progress_df = gr.Dataframe(label="Votes by voter", interactive=False)
    gr.Markdown("#### Agreement")
    agreement_button = gr.Button("Compute agreement")
    alpha_md = gr.Markdown()
    with gr.Row():
        voters_df = gr.Dataframe(label="Agreement with the other voters' majority (items with ≥ 2 others)",
                                 interactive=False)
        bias_df = gr.Dataframe(label="Position bias: left-win rate (50 % expected under the random order)",
                               interactive=False)
    disputed_df = gr.Dataframe(label="Most disputed items", interactive=False)
    gr.Markdown("#### Merged export\nThe queue's votes on each prompt merged into one: majority for pairs, "
                "ranked pairs for rankings; the rule goes into `<file>.meta.json`.")
    with gr.Row():
        merge_format = gr.Radio(list(EXPORT_FORMATS), value="trl", label="Format")
        ties = gr.Radio(list(TIE_POLICIES), value="drop", label="No majority (ties, splits)")
        merge_button = gr.Button("Export merged")
        merged_file = gr.File(label="Download", interactive=False)
    return Reports(progress_button, progress_md, progress_df, agreement_button, alpha_md, voters_df, bias_df,
                   disputed_df, merge_format, ties, merge_button, merged_file)


def chosen_settings(temperature_v: float | None, max_new_v: float | None, seed_v: float | None) -> GenerationSettings:
    return GenerationSettings(temperature=float(temperature_v or 0), max_new_tokens=int(max_new_v or 1),
                              seed=int(seed_v or 0)).validate()


def wire_import(state: AppState, form: ImportForm, status: gr.Markdown, set_pick: gr.Dropdown) -> None:
    @refusals
    def import_set(file: str | None, name: str, overlap_v: float | None, from_prefs: bool,
                   request: gr.Request) -> dict:
        session.require_admin(state, request, "importing a prompt set")
        if not file:
            raise PlaygroundError("Choose a prompt file first.")
        imported = prompt_sets.import_prompt_set(state, Path(file), name, int(overlap_v or 0), from_prefs,
                                                 source=Path(file).name)
        return {status: f"Imported prompt set **{imported.pset.name}** with {imported.prompts} prompts. "
                        "Choose its models next (pre-generate or live).",
                set_pick: gr.Dropdown(choices=prompt_sets.set_names(state), value=imported.pset.name)}

    form.button.click(import_set, [form.upload, form.name, form.overlap, form.from_preferences], [status, set_pick],
                      api_name="import_prompts")


def wire_models(state: AppState, form: ModelsForm, status: gr.Markdown, set_pick: gr.Dropdown) -> None:
    @refusals
    def run_pregeneration(set_name: str, names: list[str], temperature_v: float | None, max_new_v: float | None,
                          seed_v: float | None, request: gr.Request, progress=gr.Progress()):
        session.require_admin(state, request, "pre-generating responses")
        pset = choose_models(state, prompt_sets.prompt_set(state, set_name), names or [],
                             chosen_settings(temperature_v, max_new_v, seed_v))
        note = same_weights_note(state, pset)
        # A generator, so Stop (cancels=) ends it between prompts; each finished prompt is stored.
        for step in pregenerate_steps(state, pset):
            progress((step.done, step.total), desc=f"{step.done}/{step.total} prompts", unit="prompts")
            yield {status: f"Pre-generating **{pset.name}** ({', '.join(pset.models)}): {step.done} of "
                           f"{step.total} prompts have every response; {step.generated} generated now.{note}"}

    pre_event = form.pre_button.click(run_pregeneration, [set_pick, *form.settings], status, api_name="pregenerate",
                                      concurrency_id="model")
    form.cancel_button.click(None, None, None, cancels=[pre_event], api_visibility="private")

    @refusals
    def use_live(set_name: str, names: list[str], temperature_v: float | None, max_new_v: float | None,
                 seed_v: float | None, request: gr.Request) -> str:
        session.require_admin(state, request, "choosing a prompt set's models")
        pset = choose_models(state, prompt_sets.prompt_set(state, set_name), names or [],
                             chosen_settings(temperature_v, max_new_v, seed_v))
        return (f"**{pset.name}** compares {', '.join(pset.models)}; prompts without responses are generated "
                "when a voter reaches them." + same_weights_note(state, pset))

    form.live_button.click(use_live, [set_pick, *form.settings], status, api_name="live_models")

    @refusals
    def change_overlap(set_name: str, overlap_v: float | None, request: gr.Request) -> str:
        session.require_admin(state, request, "setting the overlap")
        pset = prompt_sets.set_overlap(state, set_name, overlap_v or 0)
        return f"**{pset.name}**: a prompt now leaves the queue after {pset.overlap} vote(s)."

    form.overlap_button.click(change_overlap, [set_pick, form.overlap], status, api_name="set_overlap")


def wire_reports(state: AppState, r: Reports, status: gr.Markdown, set_pick: gr.Dropdown) -> None:
    @refusals
    def overall_progress(set_name: str, request: gr.Request) -> dict:
        session.require_admin(state, request, "the overall progress")
        pset, progress = prompt_sets.overall_progress(state, set_name)
        return {r.progress_md: progress_markdown(pset.name, pset.overlap, progress),
                r.progress_df: votes_by_voter(progress)}

    r.progress_button.click(overall_progress, set_pick, [r.progress_md, r.progress_df], api_name="progress")

    @refusals
    def agreement(set_name: str, request: gr.Request) -> dict:
        session.require_admin(state, request, "the agreement report")
        report = prompt_sets.agreement(state, set_name)
        return {r.alpha_md: alpha_markdown(report), r.voters_df: agreement_table(report),
                r.bias_df: bias_table(report), r.disputed_df: disputed_table(report)}

    r.agreement_button.click(agreement, set_pick, [r.alpha_md, r.voters_df, r.bias_df, r.disputed_df],
                             api_name="agreement")

    @refusals
    def export_merged(fmt: str, ties_v: str, request: gr.Request) -> dict:
        session.require_admin(state, request, "exporting")
        export = data.export_merged(state, fmt, ties_v)
        return {r.merged_file: str(export.path),
                status: f"Exported {export.rows} merged {fmt} rows to `{export.path}`; the merge rule "
                        f"is in `{export.path.name}.meta.json`."}

    r.merge_button.click(export_merged, [r.merge_format, r.ties], [r.merged_file, status], api_name="export_merged")
