"""The Data tab: the collected votes (with logins on, a voter's own; see `service.data`), counts,
undo, export and import. Loads its tables when the page loads and whenever the tab is opened."""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from playground.core.errors import PlaygroundError
from playground.data.single_votes import SingleVote
from playground.data.votes import Vote
from service import data
from service.cleaning import by_flags, vote_flags
from service.state import AppState
from ui import session
from ui.errors import refusals
from ui.render import LETTERS

VOTE_COLUMNS = ["id", "time", "voter", "outcome", "winner", "models", "prompt", "anonymous", "flags"]
SHOW_VOTES = {"every vote": None, "flagged votes": True, "kept votes": False}  # the flags filter's choices
VOTER_COLUMNS = ["voter", "votes", "👍", "👎"]
MODEL_COLUMNS = ["model", "votes"]
NO_VOTES = "**No votes yet** — generate on the Playground tab and vote, or take a prompt in the Vote tab."


def vote_table(votes: list[Vote], flags: Mapping[int, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """One row per vote, newest first; `winner` names the preferred model (or the ranking), `flags`
    why the cleaning rules leave it out (`service.cleaning.vote_flags`; empty: kept)."""
    flags = flags or {}
    rows = []
    for v in reversed(votes):
        models = [r.model for r in v.responses]
        if v.outcome in ("a", "b"):
            winner = models["ab".index(v.outcome)]
        elif v.outcome == "ranking":
            winner = " > ".join(f"{LETTERS[i]}:{models[i]}" for i in v.ranking or ())
        else:
            winner = v.outcome.replace("_", " ")
        rows.append({
            "id": v.id, "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created_at)), "voter": v.voter,
            "outcome": v.outcome, "winner": winner, "models": " vs ".join(models),
            "prompt": v.prompt[-1]["content"][:200], "anonymous": v.anonymous,
            "flags": ", ".join(flags.get(v.id or -1, ())),
        })
    return pd.DataFrame(rows, columns=VOTE_COLUMNS)


def counts_table(counts: dict[str, int], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(sorted(counts.items(), key=lambda kv: -kv[1]), columns=columns)


def voter_table(counts: data.VoteCounts) -> pd.DataFrame:
    """Pairwise votes and single votes (👍, 👎) per voter, most pairwise votes first."""
    voters = sorted(counts.by_voter.keys() | counts.thumbs_by_voter.keys(),
                    key=lambda v: (-counts.by_voter.get(v, 0), v))
    return pd.DataFrame([(v, counts.by_voter.get(v, 0), *counts.thumbs_by_voter.get(v, (0, 0))) for v in voters],
                        columns=VOTER_COLUMNS)


def empty_hint(votes: list[Vote], filtered: bool, sees_all: bool) -> str:
    """What to do when the table is empty (nothing when it is not)."""
    if votes:
        return ""
    if filtered:
        return "No votes match these filters; clear them to see every vote you may see."
    return NO_VOTES if sees_all else NO_VOTES.replace("No votes yet", "You have no votes yet")


@dataclass(frozen=True)
class VoteTables:
    """The votes (filtered), the counts by voter and by model, and what to do while they are empty."""

    voter_filter: gr.Textbox
    model_filter: gr.Textbox
    flag_filter: gr.Dropdown
    refresh: gr.Button
    hint: gr.Markdown
    table: gr.Dataframe
    by_voter: gr.Dataframe
    by_model: gr.Dataframe

    @property
    def shown(self) -> list[gr.components.Component]:
        """`/votes`' outputs, in order."""
        return [self.table, self.by_voter, self.by_model, self.hint]


@dataclass(frozen=True)
class ExchangeForm:
    """Undo, export and import, with their status line."""

    undo: gr.Button
    status: gr.Markdown
    fmt: gr.Radio
    binarize: gr.Radio
    suffix: gr.Radio
    include: gr.Checkbox
    export_button: gr.Button
    export_file: gr.File
    upload: gr.File
    import_button: gr.Button


def build_data_tab(state: AppState, tab: gr.Tab, voter: gr.Textbox) -> None:
    """The tab; Undo takes back the last vote of `voter`'s name."""
    tables = tables_section(state)
    form = exchange_section()
    wire_tables(state, tab, tables)
    wire_undo(state, tables, form, voter)
    wire_exchange(state, form)


def tables_section(state: AppState) -> VoteTables:
    with gr.Row():
        voter_filter = gr.Textbox(label="Filter by voter", scale=1)
        model_filter = gr.Textbox(label="Filter by model", scale=1)
        flag_filter = gr.Dropdown(list(SHOW_VOTES), value="every vote", scale=1, elem_id="data-flag-filter",
                                  label="Show (flags: the cleaning rules, README)")
        refresh = gr.Button("Refresh", scale=0, elem_id="data-refresh")
    visibility = ("Everyone sees every vote." if not state.access.enabled or state.votes_visible_to_all else
                  "You see your own votes; the admin sees everyone's.")
    hint = gr.Markdown(elem_id="data-hint")
    table = gr.Dataframe(value=vote_table([]), headers=VOTE_COLUMNS, label=f"Votes (newest first). {visibility}",
                         interactive=False, wrap=True, elem_id="data-votes")
    with gr.Row():
        by_voter = gr.Dataframe(value=counts_table({}, VOTER_COLUMNS), headers=VOTER_COLUMNS,
                                label="Votes by voter (pairwise; single-answer 👍/👎)", interactive=False,
                                elem_id="data-by-voter")
        by_model = gr.Dataframe(value=counts_table({}, MODEL_COLUMNS), headers=MODEL_COLUMNS,
                                label="Responses voted on, by model", interactive=False, elem_id="data-by-model")
    return VoteTables(voter_filter, model_filter, flag_filter, refresh, hint, table, by_voter, by_model)


def exchange_section() -> ExchangeForm:
    with gr.Row():
        undo = gr.Button("Undo my last vote", variant="secondary")
        status = gr.Markdown()
    with gr.Accordion("Export", open=True), gr.Row():
        fmt = gr.Radio([("TRL preference rows", "trl"), ("Chatbot Arena battles", "arena"),
                        ("TRL unpaired rows (KTO)", "unpaired")], value="trl", label="Format")
        binarize = gr.Radio([("all pairs", "all_pairs"), ("best vs random (UltraFeedback)", "best_vs_random")],
                            value="all_pairs", label="Rankings become")
        suffix = gr.Radio([".jsonl", ".parquet"], value=".jsonl", label="File")
        include = gr.Checkbox(label="Include imported rows (TRL and unpaired)")
        export_button = gr.Button("Export", variant="primary", elem_id="data-export")
        export_file = gr.File(label="Download", interactive=False, elem_id="data-export-file")
    with gr.Accordion("Import TRL preference data", open=False), gr.Row():
        upload = gr.File(label="JSONL, Parquet or CSV: prompt/chosen/rejected, or prompt/completion/label (KTO)",
                         file_types=[".jsonl", ".parquet", ".csv"])
        import_button = gr.Button("Import")
    return ExchangeForm(undo, status, fmt, binarize, suffix, include, export_button, export_file, upload,
                        import_button)


def tables_view(state: AppState, tables: VoteTables, voter_value: str, model_value: str,
                user: str | None, show_value: str = "every vote") -> dict:
    """The votes `user` may see (a login name; None without logins), filtered (by voter, model, and
    flagged or kept: `SHOW_VOTES`), with their flags, and the counts."""
    votes = data.visible_votes(state, user, voter_value, model_value)
    flags = vote_flags(state)
    flagged = SHOW_VOTES.get(show_value)
    votes = by_flags(votes, flags, flagged)
    counts = data.vote_counts(state, user)
    filtered = bool((voter_value or "").strip() or (model_value or "").strip()) or flagged is not None
    return {
        tables.table: vote_table(votes, flags),
        tables.by_voter: voter_table(counts),
        tables.by_model: counts_table(counts.by_model, MODEL_COLUMNS),
        tables.hint: empty_hint(votes, filtered, data.sees_all_votes(state, user)),
    }


def wire_tables(state: AppState, tab: gr.Tab, tables: VoteTables) -> None:
    """`/votes` on Refresh; fresh tables without one: when a filter is submitted, the tab opened
    (after voting elsewhere) and at page load."""
    filters = [tables.voter_filter, tables.model_filter, tables.flag_filter]

    @refusals
    def show(voter_value: str, model_value: str, show_value: str = "every vote", request: gr.Request = None) -> dict:
        return tables_view(state, tables, voter_value, model_value, session.username(request), show_value)

    tables.refresh.click(show, filters, tables.shown, api_name="votes")
    gr.on([tables.voter_filter.submit, tables.model_filter.submit, tables.flag_filter.input, tab.select], show,
          filters, tables.shown, api_visibility="private")

    @refusals
    def show_all(request: gr.Request) -> dict:
        return tables_view(state, tables, "", "", session.username(request))

    gr.on(None, show_all, None, tables.shown, api_visibility="private")  # no triggers: at page load


def wire_undo(state: AppState, tables: VoteTables, form: ExchangeForm, voter: gr.Textbox) -> None:
    """`/undo`: the last vote of the login (or, without logins, of the name in `voter`) taken back."""

    @refusals
    def undo_last(name: str, voter_value: str, model_value: str, request: gr.Request) -> dict:
        user = session.username(request)
        who, removed = data.undo_last_vote(state, user, name)
        if removed is None:
            message = f"No votes by {who} to undo."
        elif isinstance(removed, SingleVote):
            thumb = "👍" if removed.label else "👎"
            message = f"Removed single vote #{removed.id} ({thumb} on `{removed.response.model}`)."
        else:
            message = f"Removed vote #{removed.id}."
        return {form.status: message, **tables_view(state, tables, voter_value, model_value, user)}

    form.undo.click(undo_last, [voter, tables.voter_filter, tables.model_filter], [form.status, *tables.shown],
                    api_name="undo")


def wire_exchange(state: AppState, form: ExchangeForm) -> None:
    """`/export` and `/import`: admin work."""

    @refusals
    def export(fmt_value: str, binarize_value: str, suffix_value: str, include_value: bool,
               request: gr.Request) -> dict:
        session.require_admin(state, request, "exporting")
        done = data.export_votes(state, fmt_value, binarize_value, suffix_value, include_value)
        return {form.export_file: str(done.path),
                form.status: f"Exported {done.rows} {fmt_value} rows to `{done.path}`."}

    form.export_button.click(export, [form.fmt, form.binarize, form.suffix, form.include],
                             [form.export_file, form.status], api_name="export")

    @refusals
    def import_upload(file: str | None, request: gr.Request) -> str:
        session.require_admin(state, request, "importing")
        if not file:
            raise PlaygroundError("Choose a file to import first.")
        result = data.import_votes(state, Path(file))
        if result.kind == "unpaired":
            return (f"Imported {result.imported} unpaired rows from `{Path(file).name}`; KTO trains on them "
                    "(Train tab, loss kto).")
        return f"Imported {result.imported} pairs from `{Path(file).name}`; they are used for training."

    form.import_button.click(import_upload, form.upload, form.status, api_name="import")
