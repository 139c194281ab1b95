"""The Vote tab: a prompt set's voting queue.

The guidelines on top, then the next prompt with its k responses in random order, labelled A, B, …
(the model names appear only after the vote), the vote buttons and the voter's progress. Keys (see
`ui.app.KEYBOARD`): 1–4 vote, S skips, Enter takes the next prompt. The admin panel sits below
(`ui.vote_admin`). Without a prompt set the tab says what to do: the admin (everyone, without
logins) loads the shipped example set in one click; a voter reads who can add one. Layout in
`ui.vote_layout`; here the views and the events.
"""

import random

import gradio as gr

from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_RESPONSES
from playground.data.queue import QueueItem, VoterProgress
from service import prompt_sets
from service.state import AppState
from service.voting import ALL_FLAWED_ANSWER, StoredSingleVote, StoredVote, next_queue_item, queue_progress
from ui import session
from ui.concurrency import generating
from ui.errors import refusals
from ui.render import LETTERS, slot_label
from ui.vote_admin import build_vote_admin
from ui.vote_layout import NO_SET_ADMIN, NO_SET_VOTER, QueueView, SetPicker, item_section, set_section
from ui.voting import THUMB_LABELS, single_vote_handler, vote_handler, wire_single_votes, wire_votes

VOTE_KEYS = ("Which response is better? Keys: **1** A, **2** B, **3** tie, **4** both bad, **S** skip; "
             "👍 a response with **A**/**B**, 👎 with **Shift+A**/**Shift+B**.")


def conversation_markdown(messages: list[Message]) -> str:
    """The prompt as a voter reads it: every turn under its role."""
    return "\n\n".join(f"**{m['role']}:** {m['content']}" for m in messages)


def kept_set(set_name: str | None, names: list[str]) -> str | None:
    """The set picked while it exists, else the first (None when there is none)."""
    return set_name if set_name in names else (names[0] if names else None)


def progress_line(who: str, set_name: str, progress: VoterProgress) -> str:
    return f"**{who}** in **{set_name}**: {progress.voted} voted · {progress.remaining} remaining"


def require_set(set_name: str | None) -> str:
    if not set_name:
        raise PlaygroundError("Choose a prompt set first.")
    return set_name


def build_vote_tab(state: AppState, tab: gr.Tab, voter: gr.Textbox) -> None:
    """The tab, its votes under `voter`'s name."""
    picker = set_section(state)
    view = item_section()
    build_vote_admin(state, picker.set_pick)
    wire_queue(state, view, picker, voter)
    wire_queue_votes(state, view, voter)
    wire_sets(state, tab, view, picker, voter)


def item_view(view: QueueView, item: QueueItem | None) -> dict:
    """`item` on screen (nothing, for None), its votes open; leaves the status and progress alone."""
    k = item.k if item else 0
    return {
        view.current: item,
        view.prompt: conversation_markdown(item.prompt.messages) if item else "",
        **{view.columns[i]: gr.Column(visible=i < k) for i in range(MAX_RESPONSES)},
        **{view.headers[i]: gr.Markdown(f"### {slot_label(i)}", visible=i < k) for i in range(MAX_RESPONSES)},
        **{view.texts[i]: gr.Textbox(item.responses[i].text if item and i < k else "", visible=i < k)
           for i in range(MAX_RESPONSES)},
        **{b: gr.Button(interactive=k == 2, visible=k <= 2) for b in view.pair_buttons.values()},
        **{b: gr.Button(interactive=i < k) for i, pair in enumerate(view.thumbs) for b in pair.values()},
        view.ranking: gr.Dropdown(choices=list(LETTERS[:k]), value=[], visible=k > 2),
        view.rank_button: gr.Button(interactive=k > 2, visible=k > 2),
        view.flawed_button: gr.Button(interactive=k > 2, visible=k > 2),
        view.skip: gr.Button(interactive=item is not None),
    }


def next_turn(state: AppState, view: QueueView, set_name: str | None, who: str, skipped_ids: tuple[int, ...]) -> dict:
    """`who`'s next prompt of the set on screen, with the status and progress that go with it. A
    prompt lacking responses is generated here (live), and stored for the voters after this one."""
    turn = next_queue_item(state, require_set(set_name), who, skipped_ids, random.Random())
    pset, item = turn.pset, turn.item
    if item is None:
        message = (f"Nothing left for you in **{pset.name}**: every prompt has your vote or its "
                   f"{pset.overlap} vote(s)" + (", or you skipped it" if skipped_ids else "") + ". Thank you!")
    else:
        message = VOTE_KEYS if item.k == 2 else "Rank the responses best → worst, or mark them all flawed."
    return {**item_view(view, item), view.status: message, view.progress: progress_line(who, pset.name, turn.progress)}


def wire_queue(state: AppState, view: QueueView, picker: SetPicker, voter: gr.Textbox) -> None:
    """Next (`/next_item`) and Skip (`/queue_skip`): the voter's next prompt of the set picked."""

    @refusals
    def serve(set_name: str | None, name: str, skipped_ids: tuple[int, ...], request: gr.Request) -> dict:
        return next_turn(state, view, set_name, session.voter(state, request, name), skipped_ids or ())

    view.next_button.click(serve, [picker.set_pick, voter, view.skipped], view.shown, api_name="next_item",
                           **generating(state))

    @refusals
    def skip_item(set_name: str | None, name: str, skipped_ids: tuple[int, ...], item: QueueItem | None,
                  request: gr.Request) -> dict:
        ids = (*(skipped_ids or ()), *((item.prompt.id,) if item and item.prompt.id is not None else ()))
        return {view.skipped: ids, **next_turn(state, view, set_name, session.voter(state, request, name), ids)}

    view.skip.click(skip_item, [picker.set_pick, voter, view.skipped, view.current], [view.skipped, *view.shown],
                    api_name="queue_skip", **generating(state))


def wire_queue_votes(state: AppState, view: QueueView, voter: gr.Textbox) -> None:
    """Votes (`/queue_vote`) and 👍/👎 (`/queue_rate`) on the item on screen."""
    all_votes = [*view.pair_buttons.values(), view.rank_button, view.flawed_button, *view.thumb_buttons]

    def voted(item: QueueItem, stored: StoredVote) -> dict:
        who = stored.vote.voter
        return {
            view.current: None,
            **{view.headers[i]: f"### {slot_label(i)} · `{model}`" for i, model in enumerate(item.models)},
            **{b: gr.Button(interactive=False) for b in all_votes},
            view.status: f"Vote #{stored.id} stored as **{stored.vote.outcome.replace('_', ' ')}** by {who}. "
                         "Press **Enter** (Next) for the next prompt.",
            view.progress: progress_line(who, item.set_name, queue_progress(state, item.set_name, who).progress),
        }

    vote = vote_handler(state, "Nothing to vote on: take the next prompt first (Enter).", voted)
    wire_votes(vote, {**view.pair_buttons, "ranking": view.rank_button, ALL_FLAWED_ANSWER: view.flawed_button},
               [view.ranking, voter, view.current],
               [view.current, *view.headers, *view.pair_buttons.values(), view.rank_button, view.flawed_button,
                view.status, view.progress, *view.thumb_buttons],
               api_name="queue_vote")

    def single_voted(item: QueueItem, stored: StoredSingleVote) -> dict:
        vote = stored.vote
        return {
            view.status: f"Single vote #{stored.id} stored: {THUMB_LABELS[vote.thumb]} on {LETTERS[vote.slot]} by "
                         f"{vote.voter}. Now the pairwise vote (or Skip).",
            **{b: gr.Button(interactive=False) for b in view.thumbs[vote.slot].values()},
        }

    rate = single_vote_handler(state, "Nothing to rate: take the next prompt first (Enter).", single_voted)
    wire_single_votes(rate, view.thumbs, [voter, view.current], [view.status, *view.thumb_buttons],
                      api_name="queue_rate")


def set_view(state: AppState, view: QueueView, picker: SetPicker, set_name: str | None) -> dict:
    """Set `set_name`'s guidelines and no item on screen (status and progress left alone)."""
    pset = prompt_sets.prompt_set(state, set_name) if set_name else None
    text = pset.guidelines if pset else ""
    return {**item_view(view, None), picker.guidelines: text, picker.guidelines_box: text}


def sets_view(state: AppState, picker: SetPicker, set_name: str | None, request: gr.Request) -> dict:
    """The set list (the one picked kept while it exists, else the first) and, with none, what to
    do: the example set's button for the admin, who can add one for a voter."""
    names = prompt_sets.set_names(state)
    admin = state.access.is_admin(session.username(request))
    return {
        picker.set_pick: gr.Dropdown(choices=names, value=kept_set(set_name, names)),
        picker.no_set: gr.Markdown(NO_SET_ADMIN if admin else NO_SET_VOTER, visible=not names),
        picker.example_button: gr.Button(visible=admin and not names),
    }


def wire_sets(state: AppState, tab: gr.Tab, view: QueueView, picker: SetPicker, voter: gr.Textbox) -> None:
    """The set picked: its guidelines and the voter's progress in it; the list kept up to date."""
    shown = [*view.shown, picker.guidelines, picker.guidelines_box]

    @refusals
    def show_set(set_name: str | None, request: gr.Request) -> dict:
        return set_view(state, view, picker, set_name)

    # No triggers: on page load (the guidelines as stored now) and whenever the set changes, also when
    # a handler changes it (the example set loaded, the tab opened): those write their own status and
    # progress, so this one leaves both alone.
    gr.on(None, show_set, picker.set_pick, shown, api_visibility="private")

    @refusals
    def pick_set(set_name: str | None, request: gr.Request) -> dict:
        """The voter chose another set: the last set's status and progress no longer apply."""
        return {**set_view(state, view, picker, set_name), view.progress: "",
                view.status: "Press **Next** (Enter) for a prompt." if set_name else ""}

    picker.set_pick.input(pick_set, picker.set_pick, shown, api_visibility="private")

    def opened(set_name: str | None, name: str, request: gr.Request) -> dict:
        chosen = kept_set(set_name, prompt_sets.set_names(state))
        try:
            who = session.voter(state, request, name)
            line = progress_line(who, chosen, queue_progress(state, chosen, who).progress) if chosen else ""
        except PlaygroundError:  # no valid name (yet), or the set went meanwhile: no progress to show
            line = ""
        return {**sets_view(state, picker, set_name, request), view.progress: line}

    # Each time the tab is opened (it is never the first one shown): a set imported meanwhile, by
    # the admin panel or the CLI, and the voter's progress show up without a click on Refresh.
    listed = [picker.set_pick, picker.no_set, picker.example_button, view.progress]
    for trigger in (tab.select, picker.refresh.click):
        trigger(opened, [picker.set_pick, voter], listed, api_visibility="private")
    wire_set_admin(state, view, picker)


def wire_set_admin(state: AppState, view: QueueView, picker: SetPicker) -> None:
    """The example set in one click (`/load_example_set`) and the guidelines (`/guidelines`): admin work."""

    @refusals
    def load_example(request: gr.Request) -> dict:
        session.require_admin(state, request, "adding a prompt set")
        loaded = prompt_sets.load_example_set(state)
        return {**sets_view(state, picker, loaded.pset.name, request),
                view.status: f"Loaded **{loaded.pset.name}** ({loaded.prompts} prompts). Next, in the admin panel "
                             "below: choose the models it compares, then pre-generate or let voters generate live."}

    picker.example_button.click(load_example, None, [picker.set_pick, picker.no_set, picker.example_button,
                                                     view.status], api_name="load_example_set")

    @refusals
    def save_guidelines(set_name: str | None, text: str, request: gr.Request) -> dict:
        session.require_admin(state, request, "editing the guidelines")
        pset = prompt_sets.set_guidelines(state, require_set(set_name), text or "")
        return {picker.guidelines: pset.guidelines, view.status: f"Guidelines of **{pset.name}** saved."}

    picker.guidelines_button.click(save_guidelines, [picker.set_pick, picker.guidelines_box],
                                   [picker.guidelines, view.status], api_name="guidelines")
