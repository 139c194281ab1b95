"""The Data tab: the collected votes, counts, undo, export and import."""

import time
from pathlib import Path

import gradio as gr
import pandas as pd

from playground.data.exchange import export_rows, import_file
from playground.data.votes import Vote
from service.state import AppState
from ui import session
from ui.errors import user_errors
from ui.render import LETTERS

VOTE_COLUMNS = ["id", "time", "voter", "outcome", "winner", "models", "prompt", "anonymous"]


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


def counts_table(counts: dict[str, int], key: str) -> pd.DataFrame:
    return pd.DataFrame(sorted(counts.items(), key=lambda kv: -kv[1]), columns=[key, "votes"])


def build_data_tab(state: AppState, tab: gr.Tab, voter: gr.Textbox) -> None:
    with gr.Row():
        voter_filter = gr.Textbox(label="Filter by voter", scale=1)
        model_filter = gr.Textbox(label="Filter by model", scale=1)
        refresh = gr.Button("Refresh", scale=0)
    table = gr.Dataframe(headers=VOTE_COLUMNS, label="Votes (newest first)", interactive=False, wrap=True)
    with gr.Row():
        by_voter = gr.Dataframe(label="Votes by voter", interactive=False)
        by_model = gr.Dataframe(label="Responses voted on, by model", interactive=False)
    with gr.Row():
        undo = gr.Button("Undo my last vote", variant="secondary")
        data_status = gr.Markdown()
    with gr.Accordion("Export", open=True), gr.Row():
        fmt = gr.Radio([("TRL preference rows", "trl"), ("Chatbot Arena battles", "arena")], value="trl",
                       label="Format")
        binarize = gr.Radio([("all pairs", "all_pairs"), ("best vs random (UltraFeedback)", "best_vs_random")],
                            value="all_pairs", label="Rankings become")
        suffix = gr.Radio([".jsonl", ".parquet"], value=".jsonl", label="File")
        include = gr.Checkbox(label="Include imported pairs (TRL only)")
        export_button = gr.Button("Export", variant="primary")
        export_file = gr.File(label="Download", interactive=False)
    with gr.Accordion("Import TRL preference data", open=False), gr.Row():
        upload = gr.File(label="JSONL, Parquet or CSV: prompt/chosen/rejected",
                         file_types=[".jsonl", ".parquet", ".csv"])
        import_button = gr.Button("Import")

    def show(voter_value: str, model_value: str) -> dict:
        votes = state.store.votes(voter=voter_value.strip() or None, model=model_value.strip() or None)
        return {
            table: vote_table(votes),
            by_voter: counts_table(state.store.counts_by_voter(), "voter"),
            by_model: counts_table(state.store.counts_by_model(), "model"),
        }

    show_outputs = [table, by_voter, by_model]
    refresh.click(show, [voter_filter, model_filter], show_outputs, api_name="votes")
    gr.on([voter_filter.submit, model_filter.submit], show, [voter_filter, model_filter], show_outputs,
          api_visibility="private")

    @user_errors
    def undo_last(name: str, voter_value: str, model_value: str, request: gr.Request) -> dict:
        # Anyone may take back their own last vote (a mis-click); deleting others' votes is not offered.
        who = session.voter(state, request, name)
        removed = state.store.undo_last_vote(who)
        message = f"Removed vote #{removed.id}." if removed else f"No votes by {who} to undo."
        return {data_status: message, **show(voter_value, model_value)}

    undo.click(undo_last, [voter, voter_filter, model_filter], [data_status, *show_outputs], api_name="undo")

    @user_errors
    def export(fmt_value: str, binarize_value: str, suffix_value: str, include_value: bool,
               request: gr.Request) -> dict:
        session.require_admin(state, request, "exporting")
        path = state.export_path(fmt_value, suffix_value)
        n = export_rows(state.store, fmt_value, path, binarize_value, seed=0, include_imported=include_value)
        return {export_file: str(path), data_status: f"Exported {n} {fmt_value} rows to `{path}`."}

    export_button.click(export, [fmt, binarize, suffix, include], [export_file, data_status], api_name="export")

    @user_errors
    def import_upload(file: str | None, request: gr.Request) -> str:
        session.require_admin(state, request, "importing")
        if not file:
            raise gr.Error("Choose a file to import first.")
        result = import_file(state.store, Path(file))
        return f"Imported {result.imported} pairs from `{Path(file).name}`; they are used for training."

    import_button.click(import_upload, upload, data_status, api_name="import")
