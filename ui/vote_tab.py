"""The Vote tab: a prompt set's voting queue.

The guidelines on top, then the next prompt with its k responses in random order, labelled A, B, …
(the model names appear only after the vote), the vote buttons and the voter's progress. Keys (see
`ui.app.KEYBOARD`): 1–4 vote, S skips, Enter takes the next prompt. The admin panel sits below
(`ui.vote_admin`).
"""

import random
from collections.abc import Callable
from functools import partial

import gradio as gr

from playground.core.limits import MAX_RESPONSES
from playground.data.prompt_sets import PromptSet, check_guidelines
from playground.data.queue import ALL_FLAWED, QueueItem, next_item, queue_vote, voter_progress
from playground.scoring.encoding import Message
from service.pregenerate import fill_prompt
from service.state import AppState
from ui import session
from ui.errors import user_errors
from ui.playground_tab import PAIR_VOTES
from ui.render import LETTERS, slot_label
from ui.vote_admin import build_vote_admin

ALL_FLAWED_ANSWER = "all_flawed"  # the API's name for "All flawed" on k > 2 responses


def conversation_markdown(messages: list[Message]) -> str:
    """The prompt as a voter reads it: every turn under its role."""
    return "\n\n".join(f"**{m['role']}:** {m['content']}" for m in messages)


def build_vote_tab(state: AppState, tab: gr.Tab, voter: gr.Textbox) -> None:
    names = [s.name for s in state.store.prompt_sets()]
    current = gr.State(None)  # the QueueItem on screen; None once voted on, so it cannot be voted on twice
    skipped = gr.State(())  # prompt ids skipped in this browser session; a new session sees them again

    with gr.Row():
        # Custom values allowed: a set imported after the page was built is still a valid choice.
        set_pick = gr.Dropdown(names, value=names[0] if names else None, label="Prompt set",
                               allow_custom_value=True, scale=3, elem_id="queue-set")
        refresh = gr.Button("Refresh sets", scale=0)
        name_box = gr.Textbox(label="Your name", placeholder="the same as on the Playground tab; with logins, yours",
                              scale=2, elem_id="queue-voter")
    guidelines = gr.Markdown(elem_id="queue-guidelines")
    with gr.Accordion("Edit the guidelines (admin)", open=False):
        guidelines_box = gr.Textbox(label="Guidelines (Markdown)", lines=8)
        guidelines_button = gr.Button("Save guidelines")
    progress_md = gr.Markdown()
    prompt_md = gr.Markdown()
    headers, texts, columns = [], [], []
    with gr.Row(equal_height=False):
        for i in range(MAX_RESPONSES):
            # The columns come and go with k, so two responses share the full width.
            with gr.Column(min_width=200, visible=False) as column:
                headers.append(gr.Markdown(visible=False))
                texts.append(gr.Textbox(show_label=False, lines=8, max_lines=20, interactive=False, visible=False,
                                        elem_id=f"queue-response-{i}"))
            columns.append(column)
    with gr.Row():
        pair_buttons = {o: gr.Button(label, interactive=False, elem_id=f"queue-{o}") for o, label in PAIR_VOTES.items()}
    with gr.Row():
        ranking = gr.Dropdown(list(LETTERS), multiselect=True, label="Your ranking: pick the responses best → worst",
                              visible=False, scale=3)
        rank_button = gr.Button("Submit ranking", interactive=False, visible=False, elem_id="queue-ranking")
        flawed_button = gr.Button("All flawed", interactive=False, visible=False, elem_id="queue-all_flawed")
    with gr.Row():
        skip = gr.Button("Skip (S)", interactive=False, elem_id="queue-skip")
        next_button = gr.Button("Next prompt (Enter)", variant="primary", elem_id="queue-next")
    status = gr.Markdown()
    build_vote_admin(state, set_pick)

    # The tab reads its own name box; typing in either tab's box fills in the other. `.input` fires on
    # typing only, not on these updates, so the boxes never echo each other (or overwrite typing).
    name_box.input(lambda v: v, name_box, voter, queue=False, api_visibility="private")
    voter.input(lambda v: v, voter, name_box, queue=False, api_visibility="private")

    def pick(set_name: str | None) -> PromptSet:
        if not set_name:
            raise gr.Error("Choose a prompt set first.")
        return state.store.prompt_set(set_name)

    def progress_line(pset: PromptSet, who: str) -> str:
        p = voter_progress(state.store, pset, who)
        return f"**{who}** in **{pset.name}**: {p.voted} voted · {p.remaining} remaining"

    def item_view(item: QueueItem | None) -> dict:
        k = item.k if item else 0
        return {
            current: item,
            prompt_md: conversation_markdown(item.prompt.messages) if item else "",
            **{columns[i]: gr.Column(visible=i < k) for i in range(MAX_RESPONSES)},
            **{headers[i]: gr.Markdown(f"### {slot_label(i)}", visible=i < k) for i in range(MAX_RESPONSES)},
            **{texts[i]: gr.Textbox(item.responses[i].text if item and i < k else "", visible=i < k)
               for i in range(MAX_RESPONSES)},
            **{b: gr.Button(interactive=k == 2, visible=k <= 2) for b in pair_buttons.values()},
            ranking: gr.Dropdown(choices=list(LETTERS[:k]), value=[], visible=k > 2),
            rank_button: gr.Button(interactive=k > 2, visible=k > 2),
            flawed_button: gr.Button(interactive=k > 2, visible=k > 2),
            skip: gr.Button(interactive=item is not None),
        }

    item_outputs = [status, progress_md, prompt_md, *columns, *headers, *texts, *pair_buttons.values(), ranking,
                    rank_button, flawed_button, skip, current]

    @user_errors
    def serve(set_name: str | None, name: str, skipped_ids: tuple[int, ...], request: gr.Request) -> dict:
        who = session.voter(state, request, name)
        pset = pick(set_name)
        # Prompts lacking responses are generated here (live), and stored for the voters after this one.
        item = next_item(state.store, pset, who, random.Random(), skipped_ids or (),
                         generate_missing=partial(fill_prompt, state, pset))
        if item is None:
            message = (f"Nothing left for you in **{pset.name}**: every prompt has your vote or its "
                       f"{pset.overlap} vote(s)" + (", or you skipped it" if skipped_ids else "") + ". Thank you!")
        else:
            message = "Which response is better? Keys: **1** A, **2** B, **3** tie, **4** both bad, **S** skip."
            if item.k > 2:
                message = "Rank the responses best → worst, or mark them all flawed."
        return {**item_view(item), status: message, progress_md: progress_line(pset, who)}

    next_button.click(serve, [set_pick, name_box, skipped], item_outputs, api_name="next_item")

    @user_errors
    def skip_item(set_name: str | None, name: str, skipped_ids: tuple[int, ...], item: QueueItem | None,
                  request: gr.Request) -> dict:
        ids = (*(skipped_ids or ()), *((item.prompt.id,) if item and item.prompt.id is not None else ()))
        return {skipped: ids, **serve(set_name, name, ids, request)}

    skip.click(skip_item, [set_pick, name_box, skipped, current], [skipped, *item_outputs], api_name="queue_skip")

    @user_errors
    def vote(outcome: str, ranked: list[str] | None, name: str, item: QueueItem | None, request: gr.Request) -> dict:
        if item is None:
            raise gr.Error("Nothing to vote on: take the next prompt first (Enter).")
        who = session.voter(state, request, name)
        order = None
        if outcome == "ranking":
            order = [LETTERS.index(x) for x in ranked or [] if x in LETTERS]
            if sorted(order) != list(range(item.k)):
                raise gr.Error(f"Rank all {item.k} responses, best first ({', '.join(LETTERS[:item.k])}).")
        record = queue_vote(item, ALL_FLAWED if outcome == ALL_FLAWED_ANSWER else outcome, who, order)
        vote_id = state.store.add_queue_vote(record)
        return {
            current: None,
            **{headers[i]: f"### {slot_label(i)} · `{model}`" for i, model in enumerate(item.models)},
            **{b: gr.Button(interactive=False) for b in [*pair_buttons.values(), rank_button, flawed_button]},
            status: f"Vote #{vote_id} stored as **{record.outcome.replace('_', ' ')}** by {who}. "
                    "Press **Enter** (Next) for the next prompt.",
            progress_md: progress_line(state.store.prompt_set(item.set_name), who),
        }

    vote_outputs = [current, *headers, *pair_buttons.values(), rank_button, flawed_button, status, progress_md]
    outcome_box = gr.Textbox(visible=False)
    api_vote = gr.Button(visible=False)
    api_vote.click(vote, [outcome_box, ranking, name_box, current], vote_outputs, api_name="queue_vote")

    def vote_as(outcome: str) -> Callable[..., dict]:
        # A named function, not functools.partial: Gradio finds the gr.Request parameter by its
        # annotation, which a partial hides; it would pass None, and with logins on no vote could be cast.
        def handler(ranked: list[str] | None, name: str, item: QueueItem | None, request: gr.Request) -> dict:
            return vote(outcome, ranked, name, item, request)
        return handler

    buttons = {**pair_buttons, "ranking": rank_button, ALL_FLAWED_ANSWER: flawed_button}
    for outcome, button in buttons.items():
        button.click(vote_as(outcome), [ranking, name_box, current], vote_outputs, api_visibility="private")

    @user_errors
    def show_set(set_name: str | None) -> dict:
        pset = pick(set_name) if set_name else None
        return {**item_view(None), guidelines: pset.guidelines if pset else "",
                guidelines_box: pset.guidelines if pset else "", progress_md: "",
                status: "Press **Next** (Enter) for a prompt." if pset else ""}

    # No triggers: on page load (the guidelines as stored now) and whenever another set is chosen.
    gr.on(None, show_set, set_pick, [*item_outputs, guidelines, guidelines_box], api_visibility="private")

    def refresh_sets() -> gr.Dropdown:
        return gr.Dropdown(choices=[s.name for s in state.store.prompt_sets()])

    refresh.click(refresh_sets, None, set_pick, queue=False, api_visibility="private")

    @user_errors
    def save_guidelines(set_name: str | None, text: str, request: gr.Request) -> dict:
        session.require_admin(state, request, "editing the guidelines")
        pset = pick(set_name)
        state.store.set_guidelines(pset.id, check_guidelines(text or ""))
        return {guidelines: text, status: f"Guidelines of **{pset.name}** saved."}

    guidelines_button.click(save_guidelines, [set_pick, guidelines_box], [guidelines, status], api_name="guidelines")
