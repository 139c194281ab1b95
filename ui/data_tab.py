"""The Data tab: the collected votes (with logins on, a voter's own; see `service.data`), counts,
undo, export and import. Loads its tables when the page loads and whenever the tab is opened."""

import time
from pathlib import Path

import gradio as gr
import pandas as pd

from playground.data.single_votes import SingleVote
from playground.data.votes import Vote
from service import data
from service.state import AppState
from ui import session
from ui.errors import user_errors
from ui.render import LETTERS

VOTE_COLUMNS = ["id", "time", "voter", "outcome", "winner", "models", "prompt", "anonymous"]
VOTER_COLUMNS = ["voter", "votes", "👍", "👎"]
MODEL_COLUMNS = ["model", "votes"]
NO_VOTES = "**No votes yet** — generate on the Playground tab and vote, or take a prompt in the Vote tab."


def vote_table(votes: list[Vote]) -> pd.DataFrame:
    """One row per vote, newest first; `winner` names the preferred model (or the ranking)."""
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


def build_data_tab(state: AppState, tab: gr.Tab, voter: gr.Textbox) -> None:
    with gr.Row():
        voter_filter = gr.Textbox(label="Filter by voter", scale=1)
        model_filter = gr.Textbox(label="Filter by model", scale=1)
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
    with gr.Row():
        undo = gr.Button("Undo my last vote", variant="secondary")
        data_status = gr.Markdown()
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

    @user_errors
    def show(voter_value: str, model_value: str, request: gr.Request) -> dict:
        user = session.username(request)
        votes = data.visible_votes(state, user, voter_value, model_value)
        counts = data.vote_counts(state, user)
        return {
            table: vote_table(votes),
            by_voter: voter_table(counts),
            by_model: counts_table(counts.by_model, MODEL_COLUMNS),
            hint: empty_hint(votes, bool((voter_value or "").strip() or (model_value or "").strip()),
                             data.sees_all_votes(state, user)),
        }

    show_outputs = [table, by_voter, by_model, hint]
    refresh.click(show, [voter_filter, model_filter], show_outputs, api_name="votes")
    # Fresh data without a Refresh: when the tab is opened (after voting elsewhere) and at page load.
    gr.on([voter_filter.submit, model_filter.submit, tab.select], show, [voter_filter, model_filter], show_outputs,
          api_visibility="private")

    def show_all(request: gr.Request) -> dict:
        return show("", "", request)

    gr.on(None, show_all, None, show_outputs, api_visibility="private")  # no triggers: at page load

    @user_errors
    def undo_last(name: str, voter_value: str, model_value: str, request: gr.Request) -> dict:
        who, removed = data.undo_last_vote(state, session.username(request), name)
        if removed is None:
            message = f"No votes by {who} to undo."
        elif isinstance(removed, SingleVote):
            thumb = "👍" if removed.label else "👎"
            message = f"Removed single vote #{removed.id} ({thumb} on `{removed.response.model}`)."
        else:
            message = f"Removed vote #{removed.id}."
        return {data_status: message, **show(voter_value, model_value, request)}

    undo.click(undo_last, [voter, voter_filter, model_filter], [data_status, *show_outputs], api_name="undo")

    @user_errors
    def export(fmt_value: str, binarize_value: str, suffix_value: str, include_value: bool,
               request: gr.Request) -> dict:
        session.require_admin(state, request, "exporting")
        done = data.export_votes(state, fmt_value, binarize_value, suffix_value, include_value)
        return {export_file: str(done.path), data_status: f"Exported {done.rows} {fmt_value} rows to `{done.path}`."}

    export_button.click(export, [fmt, binarize, suffix, include], [export_file, data_status], api_name="export")

    @user_errors
    def import_upload(file: str | None, request: gr.Request) -> str:
        session.require_admin(state, request, "importing")
        if not file:
            raise gr.Error("Choose a file to import first.")
        result = data.import_votes(state, Path(file))
        if result.kind == "unpaired":
            return (f"Imported {result.imported} unpaired rows from `{Path(file).name}`; KTO trains on them "
                    "(Train tab, loss kto).")
        return f"Imported {result.imported} pairs from `{Path(file).name}`; they are used for training."

    import_button.click(import_upload, upload, data_status, api_name="import")
