"""The Playground tab: k responses side by side, their scores, and the vote.

Layout in `ui.playground_layout`, the round's views and handlers in `ui.playground_round`; this
file wires the events. A click on Generate runs three steps:
1. `hold` (no queue): the new round's headers, empty texts and scores, every vote locked;
2. `/generate`: the status and the texts, streamed, then the scored round into the session state;
3. `round_view` (`/round` for API clients) and `buttons_view`: everything else, from that round.
Votes, 👍/👎 and Skip answer the status and the round, and chain the views the same way.
"""

from collections.abc import Callable
from functools import partial

import gradio as gr
from gradio.events import Dependency

from playground.scoring.rounds import Round
from service import voting
from service.state import AppState
from service.voting import slot_choices
from ui.concurrency import generating
from ui.playground_layout import PlaygroundPage, build_playground_page, slots_view
from ui.playground_round import (
    buttons_view,
    generate_handler,
    hold_handler,
    round_view,
    single_voted,
    voted,
)
from ui.voting import single_vote_handler, vote_handler, wire_single_votes, wire_votes


def build_playground_tab(state: AppState, tab: gr.Tab, voter: gr.Textbox) -> list[gr.Dropdown]:
    """The tab, its votes under `voter`'s name; returns the model pickers (the Train tab refreshes them)."""
    page = build_playground_page(state)
    wire_layout(page)
    wire_generation(state, page)
    wire_round_votes(state, page, voter)
    slot_models = list(page.settings.slot_models)

    def model_choices() -> dict:  # a run trained (or a checkpoint served) since: the policy is no longer SFT
        return {d: gr.Dropdown(choices=slot_choices(state)) for d in slot_models}

    tab.select(model_choices, None, slot_models, queue=False, api_visibility="private")
    return slot_models


def wire_layout(page: PlaygroundPage) -> None:
    s, v = page.settings, page.votes
    outputs = [*page.views.columns, *s.slot_models, v.pair_row, v.rank_row, v.ranking, s.k]
    for control in (s.k, s.mode):
        control.change(partial(slots_view, page), [s.k, s.mode], outputs, queue=False, api_visibility="private")


def follow_round(state: AppState, page: PlaygroundPage, event: Dependency, *, api: bool = False,
                 closed: bool = False, buttons_only: bool = False) -> None:
    """After `event` changed the session's round: the page shown from it (`/round` when `api`), and
    the votes it leaves open. In that order for a new round (its votes open once its scores are on
    screen), the other way round for a `closed` one (a vote locks the buttons at once)."""
    rnd = page.round

    def show_buttons(after: Dependency) -> Dependency:
        return after.then(partial(buttons_view, page), rnd, [*page.votes.buttons, *page.views.thumb_buttons],
                          queue=False, api_visibility="private")

    def show_round(after: Dependency) -> Dependency:
        return after.then(partial(round_view, state, page), rnd, page.views.shown, queue=False,
                          **({"api_name": "round"} if api else {"api_visibility": "private"}))

    if buttons_only:
        show_buttons(event)
    elif closed:
        show_round(show_buttons(event))
    else:
        show_buttons(show_round(event))


def wire_generation(state: AppState, page: PlaygroundPage) -> None:
    s = page.settings
    hold, generate = hold_handler(state, page), generate_handler(state, page)
    held = [*page.views.shown, *page.votes.buttons, *page.views.thumb_buttons]
    outputs = [page.round, page.status, *page.views.texts]

    def chain(trigger: Callable[..., Dependency], api: bool) -> None:
        started = trigger(hold, s.inputs, held, queue=False, api_visibility="private")
        generated = started.then(generate, s.inputs, outputs, **generating(state),
                                 **({"api_name": "generate"} if api else {"api_visibility": "private"}))
        follow_round(state, page, generated, api=api)

    chain(s.go.click, api=True)

    def next_seed(seed_value: float) -> int:
        return int(seed_value or 0) + 1

    chain(s.regen.click(next_seed, s.seed, s.seed, queue=False, api_visibility="private").then, api=False)

    def stop_generation(request: gr.Request) -> None:
        voting.stop_generation(state, request.session_hash if request else "")

    s.stop.click(stop_generation, None, None, queue=False, api_name="stop")


def wire_round_votes(state: AppState, page: PlaygroundPage, voter: gr.Textbox) -> None:
    """Pairwise votes and the ranking (`/vote`), 👍/👎 (`/rate`) and Skip (`/skip`) on the round on screen."""
    rnd, status, votes = page.round, page.status, page.votes
    vote = vote_handler(state, "Nothing to vote on yet: generate responses first.", partial(voted, page))
    cast = wire_votes(vote, {**votes.pair_buttons, "ranking": votes.rank_button}, [votes.ranking, voter, rnd],
                      [rnd, status], api_name="vote")
    rate = single_vote_handler(state, "Nothing to rate yet: generate responses first.", partial(single_voted, page))
    rated = wire_single_votes(rate, page.views.thumbs, [voter, rnd], [rnd, status], api_name="rate")

    def skip_round(current: Round | None) -> dict:
        return {rnd: None, status: "Skipped; nothing stored."}

    skipped = votes.skip.click(skip_round, rnd, [rnd, status], api_name="skip")
    for event in cast:
        follow_round(state, page, event, closed=True)  # the vote reveals the models in the headers
    for event in (*rated, skipped):
        follow_round(state, page, event, buttons_only=True)

