"""The vote wiring the Playground and Vote tabs share: one handler (the ranking read from letters,
the voter from the login or the name box, the record made and stored by `service.voting.record_vote`),
one click per vote button, and a hidden button that gives the API its endpoint. The same for the
single votes, a 👍/👎 under each response (`service.voting.record_single_vote`)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gradio as gr
from gradio.events import Dependency

from playground.data.queue import QueueItem
from playground.scoring.rounds import Round
from service.state import AppState
from service.voting import StoredSingleVote, StoredVote, record_single_vote, record_vote
from ui import session
from ui.errors import refusals
from ui.render import LETTERS

PAIR_VOTES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}

THUMB_LABELS = {"up": "👍 good", "down": "👎 bad"}

# What a tab shows once a vote is stored: its component updates, given the voted-on round or item.
Done = Callable[[Round | QueueItem, StoredVote], dict]
SingleDone = Callable[[Round | QueueItem, StoredSingleVote], dict]


def ranking_order(ranked: Sequence[str] | None, k: int) -> list[int]:
    """The slots best first from the letters picked ("C", "A", "B" -> [2, 0, 1]); all k are needed."""
    order = [LETTERS.index(x) for x in ranked or [] if x in LETTERS]
    if sorted(order) != list(range(k)):
        raise gr.Error(f"Rank all {k} responses, best first ({', '.join(LETTERS[:k])}).")
    return order


def vote_handler(state: AppState, nothing_yet: str, done: Done) -> Callable[..., dict]:
    """The handler both tabs' vote buttons and API endpoints call: (outcome, ranking letters, typed
    name, the round or queue item on screen, request) -> `done`'s updates. `nothing_yet` is the error
    when there is nothing on screen to vote on."""

    @refusals
    def vote(outcome: str, ranked: list[str] | None, name: str, target: Round | QueueItem | None,
             request: gr.Request) -> dict:
        if target is None:
            raise gr.Error(nothing_yet)
        order = ranking_order(ranked, target.k) if outcome == "ranking" else None
        return done(target, record_vote(state, target, outcome, session.voter(state, request, name), order))

    return vote


def vote_as(vote: Callable[..., dict], outcome: str) -> Callable[..., dict]:
    """`vote` with its outcome fixed, for one button."""
    # A named function, not functools.partial: Gradio finds the gr.Request parameter by its
    # annotation, which a partial hides; it would pass None, and with logins on no vote could be cast.
    def cast(ranked: list[str] | None, name: str, target: Any, request: gr.Request) -> dict:
        return vote(outcome, ranked, name, target, request)
    return cast


def wire_votes(vote: Callable[..., dict], buttons: Mapping[str, gr.Button], inputs: list[gr.components.Component],
               outputs: list[gr.components.Component], api_name: str) -> list[Dependency]:
    """Each button casts its outcome; the API endpoint `api_name` takes (outcome, ranking, voter
    name), through a hidden button. `inputs`: the ranking, the name box and the round/item state.
    Returns the events (the buttons', then the API's), for what follows a vote."""
    outcome_box = gr.Textbox(visible=False)
    api_vote = gr.Button(visible=False)
    events = [button.click(vote_as(vote, outcome), inputs, outputs, api_visibility="private")
              for outcome, button in buttons.items()]
    return [*events, api_vote.click(vote, [outcome_box, *inputs], outputs, api_name=api_name)]


def slot_index(letter: str, k: int) -> int:
    """The response slot a letter names ("B" -> 1), among the k on screen."""
    if letter not in LETTERS[:k]:
        raise gr.Error(f"Response {letter!r} is not on screen; pick one of {', '.join(LETTERS[:k])}.")
    return LETTERS.index(letter)


def single_vote_handler(state: AppState, nothing_yet: str, done: SingleDone) -> Callable[..., dict]:
    """The handler of the 👍/👎 buttons and their API endpoint: (response letter, "up" or "down",
    typed name, the round or queue item on screen, request) -> `done`'s updates."""

    @refusals
    def rate(letter: str, thumb: str, name: str, target: Round | QueueItem | None, request: gr.Request) -> dict:
        if target is None:
            raise gr.Error(nothing_yet)
        slot = slot_index(letter, target.k)
        return done(target, record_single_vote(state, target, slot, thumb, session.voter(state, request, name)))

    return rate


def wire_single_votes(rate: Callable[..., dict], buttons: Sequence[Mapping[str, gr.Button]],
                      inputs: list[gr.components.Component], outputs: list[gr.components.Component],
                      api_name: str) -> list[Dependency]:
    """`buttons[i]` holds slot i's "up" and "down" buttons; the API endpoint `api_name` takes
    (response letter, "up"/"down", voter name). `inputs`: the name box and the round/item state.
    Returns the events, as `wire_votes` does."""
    letter_box, thumb_box = gr.Textbox(visible=False), gr.Textbox(visible=False)
    api_rate = gr.Button(visible=False)
    events = [button.click(rate_as(rate, letter, thumb), inputs, outputs, api_visibility="private")
              for letter, pair in zip(LETTERS, buttons, strict=False) for thumb, button in pair.items()]
    return [*events, api_rate.click(rate, [letter_box, thumb_box, *inputs], outputs, api_name=api_name)]


def rate_as(rate: Callable[..., dict], letter: str, thumb: str) -> Callable[..., dict]:
    """`rate` with its response and thumb fixed, for one button (a named function: see `vote_as`)."""
    def cast(name: str, target: Any, request: gr.Request) -> dict:
        return rate(letter, thumb, name, target, request)
    return cast


def thumb_buttons(prefix: str, slot: int) -> dict[str, gr.Button]:
    """Slot `slot`'s 👍 and 👎 buttons (elem ids `<prefix>thumb-up-<slot>`, `…-down-…`: the keys A–D
    and Shift+A–D click them), created disabled."""
    return {thumb: gr.Button(f"{label} ({LETTERS[slot]})", interactive=False, size="sm", min_width=60,
                             elem_id=f"{prefix}thumb-{thumb}-{slot}") for thumb, label in THUMB_LABELS.items()}
