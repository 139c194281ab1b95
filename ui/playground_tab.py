"""The Playground tab: k responses side by side, their scores, and the vote."""

import random
from dataclasses import replace
from typing import NamedTuple

import gradio as gr

from playground.core.limits import MAX_RESPONSES
from playground.inference.settings import STOPPED, GenerationSettings
from playground.scoring.rounds import Round, chat_messages, preference_matrix, token_pieces
from service import voting
from service.state import AppState
from service.voting import StoredSingleVote, StoredVote, slot_choices, start_round
from ui.concurrency import generating
from ui.errors import user_errors
from ui.render import LETTERS, preference_table, score_table, slot_label, token_view
from ui.voting import (
    PAIR_VOTES,
    THUMB_LABELS,
    single_vote_handler,
    thumb_buttons,
    vote_handler,
    wire_single_votes,
    wire_votes,
)

SIDE_BY_SIDE, ANONYMOUS = "Side by side", "Anonymous battle"
DEFAULTS = GenerationSettings()
STREAM_INTERVAL = 0.2  # seconds between two streamed updates of the texts: smooth to read, light on the server


def revealed(name: str, rated_as: str) -> str:
    """A slot's model as shown after the vote, with the name it is rated under when that differs."""
    return f"`{name}`" + (f" (rated as `{rated_as}`)" if rated_as != name else "")


class PlaygroundHandles(NamedTuple):
    """Components other tabs read or update."""

    voter: gr.Textbox
    slot_models: list[gr.Dropdown]


def build_playground_tab(state: AppState, tab: gr.Tab) -> PlaygroundHandles:
    catalog = list(state.slot_catalog())
    defaults = ["policy", "reference", "sft", "policy"]
    choices = slot_choices(state)  # a fresh policy is labelled as the SFT model it equals
    rnd = gr.State(None)  # the session's current Round

    with gr.Row():
        voter = gr.Textbox(label="Your name", placeholder="votes are stored under this name", scale=2,
                           elem_id="voter")
        mode = gr.Radio([SIDE_BY_SIDE, ANONYMOUS], value=SIDE_BY_SIDE, label="Mode", scale=2)
        k = gr.Slider(2, MAX_RESPONSES, value=2, step=1, label="Responses k", scale=1)
        beta = gr.Number(value=state.beta, label="β in r = β·log(π_θ/π_ref)", minimum=1e-6, scale=1)
    with gr.Row():
        slot_models = [gr.Dropdown(choices, value=defaults[i] if defaults[i] in catalog else catalog[0],
                                   label=f"Model for {LETTERS[i]}", visible=i < 2, elem_id=f"model-{i}")
                       for i in range(MAX_RESPONSES)]
    system = gr.Textbox(label="System prompt (optional)", lines=1)
    prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Ask something…", elem_id="prompt")
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            temperature = gr.Slider(0, 2, value=DEFAULTS.temperature, step=0.05, label="Temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1, value=DEFAULTS.top_p, step=0.05, label="Top-p")
            top_k = gr.Slider(0, 200, value=DEFAULTS.top_k, step=1, label="Top-k (0 = off)")
        with gr.Row():
            max_new = gr.Slider(1, 1024, value=DEFAULTS.max_new_tokens, step=1, label="Max new tokens")
            repetition = gr.Slider(0.5, 2, value=DEFAULTS.repetition_penalty, step=0.05, label="Repetition penalty")
            seed = gr.Number(value=DEFAULTS.seed, precision=0, label="Seed", minimum=0)
    with gr.Row():
        go = gr.Button("Generate", variant="primary", elem_id="generate")
        regen = gr.Button("Regenerate (new seed)", elem_id="regenerate")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
    status = gr.Markdown("")

    columns, headers, texts, scores, tokens, thumbs = [], [], [], [], [], []
    with gr.Row(equal_height=False):
        for i in range(MAX_RESPONSES):
            with gr.Column(visible=i < 2) as col:
                headers.append(gr.Markdown(f"### {slot_label(i)}"))
                texts.append(gr.Textbox(show_label=False, lines=8, max_lines=20, interactive=False,
                                        elem_id=f"response-{i}"))
                with gr.Row():
                    thumbs.append(thumb_buttons("", i))
                scores.append(gr.Markdown())
                with gr.Accordion("Per-token log-ratio", open=False):
                    tokens.append(gr.HTML())
            columns.append(col)
    prefs = gr.Markdown()

    with gr.Row(visible=True) as pair_row:
        pair_buttons = {o: gr.Button(label, interactive=False, elem_id=f"vote-{o}") for o, label in PAIR_VOTES.items()}
    with gr.Row(visible=False) as rank_row:
        ranking = gr.Dropdown(list(LETTERS), multiselect=True, label="Your ranking: pick responses best → worst",
                              scale=3)
        rank_button = gr.Button("Submit ranking", interactive=False, elem_id="vote-ranking")
    skip = gr.Button("Skip (no vote)", interactive=False, elem_id="skip")
    vote_buttons = [*pair_buttons.values(), rank_button, skip]
    single_buttons = [b for pair in thumbs for b in pair.values()]

    def layout(k_value: float, mode_value: str) -> dict:
        n = 2 if mode_value == ANONYMOUS else int(k_value)
        return {
            **{c: gr.Column(visible=i < n) for i, c in enumerate(columns)},
            **{d: gr.Dropdown(visible=mode_value == SIDE_BY_SIDE and i < n) for i, d in enumerate(slot_models)},
            pair_row: gr.Row(visible=n == 2),
            rank_row: gr.Row(visible=n > 2),
            ranking: gr.Dropdown(value=[]),
            k: gr.Slider(interactive=mode_value == SIDE_BY_SIDE),
        }

    layout_outputs = [*columns, *slot_models, pair_row, rank_row, ranking, k]
    k.change(layout, [k, mode], layout_outputs, queue=False, api_visibility="private")
    mode.change(layout, [k, mode], layout_outputs, queue=False, api_visibility="private")

    def lock_votes(locked: bool) -> dict:
        return {b: gr.Button(interactive=not locked) for b in vote_buttons}

    def lock_single_votes(locked: bool) -> dict:
        return {b: gr.Button(interactive=not locked) for b in single_buttons}

    @user_errors
    def generate(prompt: str, system: str, k: float, mode: str, model_a: str, model_b: str, model_c: str,
                 model_d: str, temperature: float, top_p: float, top_k: float, max_new_tokens: float,
                 repetition_penalty: float, seed: float, beta: float, request: gr.Request):
        # The parameter names are /generate's keyword names for gradio_client (they shadow the widgets here).
        messages = chat_messages(prompt, system)
        settings = GenerationSettings(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                                      max_new_tokens=int(max_new_tokens),
                                      repetition_penalty=float(repetition_penalty), seed=int(seed or 0))
        anonymous = mode == ANONYMOUS
        slots = None if anonymous else [model_a, model_b, model_c, model_d][: int(k)]
        current = start_round(state, messages, slots, settings, float(beta or 0), random.Random())
        names, n = current.models, current.k
        yield {
            rnd: None, status: "Generating…", prefs: "",
            **lock_votes(True), **lock_single_votes(True),
            **{headers[i]: f"### {slot_label(i)}" + ("" if anonymous else f" · `{names[i]}`") for i in range(n)},
            **{scores[i]: "" for i in range(n)}, **{tokens[i]: "" for i in range(n)},
        }
        for final in voting.generate_round(state, current, request.session_hash if request else "", STREAM_INTERVAL):
            yield {texts[i]: final.texts[i] for i in range(n)}
        yield {status: "Scoring…"}
        current = voting.score_generated(state, current, final)
        yield {
            rnd: current,
            status: ("Stopped early. " if STOPPED in final.endings else "") + "Vote below"
            + (" (names are revealed after your vote)." if anonymous else "."),
            **{scores[i]: score_table(s, current.kl[i], state.scorer.max_length)
               for i, s in enumerate(current.scores)},
            **{tokens[i]: token_view(token_pieces(state.models.tokenizer, s.token_ids), s.token_log_ratios)
               for i, s in enumerate(current.scores)},
            prefs: preference_table(preference_matrix(current.scores)),
            **{texts[i]: t for i, t in enumerate(current.texts)},
            **lock_votes(False), **lock_single_votes(False),
        }

    gen_inputs = [prompt, system, k, mode, *slot_models, temperature, top_p, top_k, max_new, repetition, seed, beta]
    gen_outputs = [rnd, status, prefs, *headers, *texts, *scores, *tokens, *vote_buttons, *single_buttons]
    go.click(generate, gen_inputs, gen_outputs, api_name="generate", **generating(state))

    def next_seed(seed_value: float) -> int:
        return int(seed_value or 0) + 1

    regen.click(next_seed, seed, seed, queue=False, api_visibility="private").then(
        generate, gen_inputs, gen_outputs, api_visibility="private", **generating(state))

    def stop_generation(request: gr.Request) -> None:
        voting.stop_generation(state, request.session_hash if request else "")

    stop.click(stop_generation, None, None, queue=False, api_name="stop")

    def voted(current: Round, stored: StoredVote) -> dict:
        rated = [r.rated_as or r.model for r in stored.vote.responses]
        return {
            rnd: replace(current, voted_at=stored.vote.created_at),
            status: f"Vote #{stored.id} stored as **{stored.vote.outcome.replace('_', ' ')}** by {stored.vote.voter}.",
            **{headers[i]: f"### {slot_label(i)} · {revealed(m, rated[i])}" for i, m in enumerate(current.models)},
            **lock_votes(True),
        }

    vote = vote_handler(state, "Nothing to vote on yet: generate responses first.", voted)
    wire_votes(vote, {**pair_buttons, "ranking": rank_button}, [ranking, voter, rnd], [rnd, status, *headers,
               *vote_buttons], api_name="vote")

    def single_voted(current: Round, stored: StoredSingleVote) -> dict:
        slot, vote = stored.vote.slot, stored.vote
        return {
            rnd: replace(current, thumbs=(*current.thumbs, slot)),
            status: f"Single vote #{stored.id} stored: {THUMB_LABELS[vote.thumb]} on {LETTERS[slot]} by {vote.voter}"
                    " (trains KTO; the pairwise vote is separate).",
            **{b: gr.Button(interactive=False) for b in thumbs[slot].values()},
        }

    rate = single_vote_handler(state, "Nothing to rate yet: generate responses first.", single_voted)
    wire_single_votes(rate, thumbs, [voter, rnd], [rnd, status, *single_buttons], api_name="rate")

    def skip_round(current: Round | None) -> dict:
        return {rnd: None, status: "Skipped; nothing stored.", **lock_votes(True)}

    skip.click(skip_round, rnd, [rnd, status, *vote_buttons], api_name="skip")

    def model_choices() -> dict:  # a run trained (or a checkpoint served) since: the policy is no longer SFT
        return {d: gr.Dropdown(choices=slot_choices(state)) for d in slot_models}

    tab.select(model_choices, None, slot_models, queue=False, api_visibility="private")
    return PlaygroundHandles(voter, slot_models)
