"""The Vote tab: a prompt set's voting queue.

The guidelines on top, then the next prompt with its k responses in random order, labelled A, B, …
(the model names appear only after the vote), the vote buttons and the voter's progress. Keys (see
`ui.app.KEYBOARD`): 1–4 vote, S skips, Enter takes the next prompt. The admin panel sits below
(`ui.vote_admin`). Without a prompt set the tab says what to do: the admin (everyone, without
logins) loads the shipped example set in one click; a voter reads who can add one.
"""

import random

import gradio as gr

from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_RESPONSES
from playground.data.queue import QueueItem, VoterProgress
from service import prompt_sets
from service.state import AppState
from service.voting import ALL_FLAWED_ANSWER, QueueTurn, StoredSingleVote, StoredVote, next_queue_item, queue_progress
from ui import session
from ui.concurrency import generating
from ui.errors import user_errors
from ui.render import LETTERS, slot_label
from ui.vote_admin import build_vote_admin
from ui.voting import (
    PAIR_VOTES,
    THUMB_LABELS,
    single_vote_handler,
    thumb_buttons,
    vote_handler,
    wire_single_votes,
    wire_votes,
)

NO_SET_ADMIN = ("**No prompt set yet.** Load the shipped example set with the button, or import "
                "your own in the admin panel below; then choose the models it compares.")
NO_SET_VOTER = ("**No prompt set yet.** An admin adds one: in the admin panel of this tab, or on the command "
                "line with `python -m playground.data prompts FILE --name NAME`. Come back when it is there.")


def conversation_markdown(messages: list[Message]) -> str:
    """The prompt as a voter reads it: every turn under its role."""
    return "\n\n".join(f"**{m['role']}:** {m['content']}" for m in messages)


def kept_set(set_name: str | None, names: list[str]) -> str | None:
    """The set picked while it exists, else the first (None when there is none)."""
    return set_name if set_name in names else (names[0] if names else None)


def progress_line(who: str, set_name: str, progress: VoterProgress) -> str:
    return f"**{who}** in **{set_name}**: {progress.voted} voted · {progress.remaining} remaining"


def build_vote_tab(state: AppState, tab: gr.Tab, voter: gr.Textbox) -> None:
    names = prompt_sets.set_names(state)
    current = gr.State(None)  # the QueueItem on screen; None once voted on, so it cannot be voted on twice
    skipped = gr.State(())  # prompt ids skipped in this browser session; a new session sees them again

    with gr.Row():
        # Custom values allowed: a set imported after the page was built is still a valid choice.
        set_pick = gr.Dropdown(names, value=names[0] if names else None, label="Prompt set",
                               allow_custom_value=True, scale=3, elem_id="queue-set")
        refresh = gr.Button("Refresh sets", scale=0)
        name_box = gr.Textbox(label="Your name", placeholder="the same as on the Playground tab; with logins, yours",
                              scale=2, elem_id="queue-voter")
    # As a page without logins shows it; with logins, `sets_view` fills in the caller's role on opening.
    no_set = gr.Markdown(NO_SET_VOTER if state.access.enabled else NO_SET_ADMIN, visible=not names,
                         elem_id="queue-no-set")
    example_button = gr.Button("Load the example prompt set", variant="primary",
                               visible=not names and not state.access.enabled, elem_id="queue-load-example")
    guidelines = gr.Markdown(elem_id="queue-guidelines")
    with gr.Accordion("Edit the guidelines (admin)", open=False):
        guidelines_box = gr.Textbox(label="Guidelines (Markdown)", lines=8)
        guidelines_button = gr.Button("Save guidelines")
    progress_md = gr.Markdown()
    prompt_md = gr.Markdown()
    headers, texts, columns, thumbs = [], [], [], []
    with gr.Row(equal_height=False):
        for i in range(MAX_RESPONSES):
            # The columns come and go with k, so two responses share the full width.
            with gr.Column(min_width=200, visible=False) as column:
                headers.append(gr.Markdown(visible=False))
                texts.append(gr.Textbox(show_label=False, lines=8, max_lines=20, interactive=False, visible=False,
                                        elem_id=f"queue-response-{i}"))
                with gr.Row():
                    thumbs.append(thumb_buttons("queue-", i))
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

    def require_set(set_name: str | None) -> str:
        if not set_name:
            raise gr.Error("Choose a prompt set first.")
        return set_name

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
            **{b: gr.Button(interactive=i < k) for i, pair in enumerate(thumbs) for b in pair.values()},
            ranking: gr.Dropdown(choices=list(LETTERS[:k]), value=[], visible=k > 2),
            rank_button: gr.Button(interactive=k > 2, visible=k > 2),
            flawed_button: gr.Button(interactive=k > 2, visible=k > 2),
            skip: gr.Button(interactive=item is not None),
        }

    single_buttons = [b for pair in thumbs for b in pair.values()]
    item_outputs = [status, progress_md, prompt_md, *columns, *headers, *texts, *pair_buttons.values(), ranking,
                    rank_button, flawed_button, skip, current, *single_buttons]

    @user_errors
    def serve(set_name: str | None, name: str, skipped_ids: tuple[int, ...], request: gr.Request) -> dict:
        who = session.voter(state, request, name)
        # Prompts lacking responses are generated here (live), and stored for the voters after this one.
        turn: QueueTurn = next_queue_item(state, require_set(set_name), who, skipped_ids or (), random.Random())
        pset, item = turn.pset, turn.item
        if item is None:
            message = (f"Nothing left for you in **{pset.name}**: every prompt has your vote or its "
                       f"{pset.overlap} vote(s)" + (", or you skipped it" if skipped_ids else "") + ". Thank you!")
        else:
            message = ("Which response is better? Keys: **1** A, **2** B, **3** tie, **4** both bad, **S** skip; "
                       "👍 a response with **A**/**B**, 👎 with **Shift+A**/**Shift+B**.")
            if item.k > 2:
                message = "Rank the responses best → worst, or mark them all flawed."
        return {**item_view(item), status: message, progress_md: progress_line(who, pset.name, turn.progress)}

    next_button.click(serve, [set_pick, name_box, skipped], item_outputs, api_name="next_item", **generating(state))

    @user_errors
    def skip_item(set_name: str | None, name: str, skipped_ids: tuple[int, ...], item: QueueItem | None,
                  request: gr.Request) -> dict:
        ids = (*(skipped_ids or ()), *((item.prompt.id,) if item and item.prompt.id is not None else ()))
        return {skipped: ids, **serve(set_name, name, ids, request)}

    skip.click(skip_item, [set_pick, name_box, skipped, current], [skipped, *item_outputs], api_name="queue_skip",
               **generating(state))

    def voted(item: QueueItem, stored: StoredVote) -> dict:
        who = stored.vote.voter
        return {
            current: None,
            **{headers[i]: f"### {slot_label(i)} · `{model}`" for i, model in enumerate(item.models)},
            **{b: gr.Button(interactive=False) for b in [*pair_buttons.values(), rank_button, flawed_button,
                                                          *single_buttons]},
            status: f"Vote #{stored.id} stored as **{stored.vote.outcome.replace('_', ' ')}** by {who}. "
                    "Press **Enter** (Next) for the next prompt.",
            progress_md: progress_line(who, item.set_name, queue_progress(state, item.set_name, who).progress),
        }

    vote = vote_handler(state, "Nothing to vote on: take the next prompt first (Enter).", voted)
    wire_votes(vote, {**pair_buttons, "ranking": rank_button, ALL_FLAWED_ANSWER: flawed_button},
               [ranking, name_box, current],
               [current, *headers, *pair_buttons.values(), rank_button, flawed_button, status, progress_md,
                *single_buttons],
               api_name="queue_vote")

    def single_voted(item: QueueItem, stored: StoredSingleVote) -> dict:
        vote = stored.vote
        return {
            status: f"Single vote #{stored.id} stored: {THUMB_LABELS[vote.thumb]} on {LETTERS[vote.slot]} by "
                    f"{vote.voter}. Now the pairwise vote (or Skip).",
            **{b: gr.Button(interactive=False) for b in thumbs[vote.slot].values()},
        }

    rate = single_vote_handler(state, "Nothing to rate: take the next prompt first (Enter).", single_voted)
    wire_single_votes(rate, thumbs, [name_box, current], [status, *single_buttons], api_name="queue_rate")

    @user_errors
    def show_set(set_name: str | None) -> dict:
        pset = prompt_sets.prompt_set(state, set_name) if set_name else None
        return {**item_view(None), guidelines: pset.guidelines if pset else "",
                guidelines_box: pset.guidelines if pset else ""}

    # No triggers: on page load (the guidelines as stored now) and whenever the set changes, also when
    # a handler changes it (the example set loaded, the tab opened): those write their own status and
    # progress, so this one leaves both alone.
    gr.on(None, show_set, set_pick, [*item_outputs, guidelines, guidelines_box], api_visibility="private")

    @user_errors
    def pick_set(set_name: str | None) -> dict:
        """The voter chose another set: the last set's status and progress no longer apply."""
        return {**show_set(set_name), progress_md: "",
                status: "Press **Next** (Enter) for a prompt." if set_name else ""}

    set_pick.input(pick_set, set_pick, [*item_outputs, guidelines, guidelines_box], api_visibility="private")

    def sets_view(set_name: str | None, request: gr.Request) -> dict:
        """The set list (the one picked kept while it exists, else the first) and, with none, what
        to do: the example set's button for the admin, who can add one for a voter."""
        names_now = prompt_sets.set_names(state)
        admin = state.access.is_admin(session.username(request))
        return {
            set_pick: gr.Dropdown(choices=names_now, value=kept_set(set_name, names_now)),
            no_set: gr.Markdown(NO_SET_ADMIN if admin else NO_SET_VOTER, visible=not names_now),
            example_button: gr.Button(visible=admin and not names_now),
        }

    def opened(set_name: str | None, name: str, request: gr.Request) -> dict:
        view = sets_view(set_name, request)
        chosen = kept_set(set_name, prompt_sets.set_names(state))
        try:
            who = session.voter(state, request, name)
            line = progress_line(who, chosen, queue_progress(state, chosen, who).progress) if chosen else ""
        except PlaygroundError:  # no name typed yet (or the set went meanwhile): no progress to show
            line = ""
        return {**view, progress_md: line}

    # Each time the tab is opened (it is never the first one shown): a set imported meanwhile, by
    # the admin panel or the CLI, and the voter's progress show up without a click on Refresh.
    sets_outputs = [set_pick, no_set, example_button]
    tab.select(opened, [set_pick, name_box], [*sets_outputs, progress_md], api_visibility="private")
    refresh.click(opened, [set_pick, name_box], [*sets_outputs, progress_md], api_visibility="private")

    @user_errors
    def load_example(request: gr.Request) -> dict:
        session.require_admin(state, request, "adding a prompt set")
        loaded = prompt_sets.load_example_set(state)
        return {**sets_view(loaded.pset.name, request), set_pick: gr.Dropdown(
                    choices=prompt_sets.set_names(state), value=loaded.pset.name),
                status: f"Loaded **{loaded.pset.name}** ({loaded.prompts} prompts). Next, in the admin panel "
                        "below: choose the models it compares, then pre-generate or let voters generate live."}

    example_button.click(load_example, None, [*sets_outputs, status], api_name="load_example_set")

    @user_errors
    def save_guidelines(set_name: str | None, text: str, request: gr.Request) -> dict:
        session.require_admin(state, request, "editing the guidelines")
        pset = prompt_sets.set_guidelines(state, require_set(set_name), text or "")
        return {guidelines: pset.guidelines, status: f"Guidelines of **{pset.name}** saved."}

    guidelines_button.click(save_guidelines, [set_pick, guidelines_box], [guidelines, status], api_name="guidelines")
