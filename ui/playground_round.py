"""The Playground tab's round as the page shows it, and the handlers that move it on.

The session's `Round` (a `gr.State`) is the one source of what is on screen: `round_view` renders
the headers, texts, score tables, token views and preference table from it, `buttons_view` which
votes are open. `/generate` itself only streams the status and the texts; the rest follows from
the round in chained events (`ui.playground_tab.wire_generation`), so each streamed update costs
Gradio no more than the texts it carries.
"""

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import NamedTuple

import gradio as gr

from playground.core.errors import PlaygroundError
from playground.inference.settings import STOPPED, GenerationSettings
from playground.scoring.rounds import Round, chat_messages, preference_matrix, token_pieces
from service import voting
from service.state import AppState
from service.voting import StoredSingleVote, StoredVote, start_round
from ui.errors import refusals
from ui.playground_layout import ANONYMOUS, PlaygroundPage
from ui.render import LETTERS, preference_table, score_table, slot_label, token_view
from ui.voting import THUMB_LABELS

STREAM_INTERVAL = 0.2  # seconds between two streamed updates of the texts: smooth to read, light on the server


class RoundRequest(NamedTuple):
    """What the Generate button sends, in the order of `PlaygroundPage.round_inputs`."""

    prompt: str
    system: str
    k: float
    mode: str
    model_a: str
    model_b: str
    model_c: str
    model_d: str
    temperature: float
    top_p: float
    top_k: float
    max_new_tokens: float
    repetition_penalty: float
    seed: float
    beta: float


def new_round(state: AppState, ask: RoundRequest) -> Round:
    """The round these settings start (refused with `PlaygroundError` if one of them is not valid)."""
    settings = GenerationSettings(temperature=float(ask.temperature), top_p=float(ask.top_p), top_k=int(ask.top_k),
                                  max_new_tokens=int(ask.max_new_tokens),
                                  repetition_penalty=float(ask.repetition_penalty), seed=int(ask.seed or 0))
    slots = None if ask.mode == ANONYMOUS else [ask.model_a, ask.model_b, ask.model_c, ask.model_d][: int(ask.k)]
    return start_round(state, chat_messages(ask.prompt, ask.system), slots, settings, float(ask.beta or 0),
                       random.Random())


def revealed(name: str, rated_as: str) -> str:
    """A slot's model as shown after the vote, with the name it is rated under when that differs."""
    return f"`{name}`" + (f" (rated as `{rated_as}`)" if rated_as != name else "")


def header(rnd: Round | None, i: int) -> str:
    """Slot i's heading: its model named side by side, and in an anonymous battle only after the vote."""
    if rnd is None or i >= rnd.k or (rnd.anonymous and rnd.voted_at is None):
        return f"### {slot_label(i)}"
    if rnd.voted_at is None:
        return f"### {slot_label(i)} · `{rnd.models[i]}`"
    return f"### {slot_label(i)} · {revealed(rnd.models[i], (rnd.rated_as or rnd.models)[i])}"


def texts_update(page: PlaygroundPage, texts: Sequence[str]) -> dict:
    """Every slot's text box (those beyond the round's k emptied): all of them, so that Gradio
    rebuilds none for a streamed update."""
    return {box: texts[i] if i < len(texts) else "" for i, box in enumerate(page.views.texts)}


def round_view(state: AppState, page: PlaygroundPage, rnd: Round | None) -> dict:
    """Headers, texts, score tables, per-token views and the preference table of `rnd` (empty
    where it has none yet)."""
    views, scored = page.views, rnd is not None and bool(rnd.scores)
    scores = rnd.scores if scored else ()
    return {
        **{h: header(rnd, i) for i, h in enumerate(views.headers)},
        **texts_update(page, rnd.texts if rnd else ()),
        **{box: score_table(scores[i], rnd.kl[i], state.scorer.max_length) if i < len(scores) else ""
           for i, box in enumerate(views.scores)},
        **{box: token_view(token_pieces(state.models.tokenizer, scores[i].token_ids), scores[i].token_log_ratios)
           if i < len(scores) else "" for i, box in enumerate(views.tokens)},
        views.prefs: preference_table(preference_matrix(scores)) if scored else "",
    }


def buttons_view(page: PlaygroundPage, rnd: Round | None) -> dict:
    """The vote buttons open on a scored round until its vote; each 👍/👎 pair until it is used."""
    scored = rnd is not None and bool(rnd.scores)
    pair_open = scored and rnd.voted_at is None
    return {
        **{b: gr.Button(interactive=pair_open) for b in page.votes.buttons},
        **{b: gr.Button(interactive=scored and i < rnd.k and i not in rnd.thumbs)
           for i, pair in enumerate(page.views.thumbs) for b in pair.values()},
    }


def generate_handler(state: AppState, page: PlaygroundPage) -> Callable[..., Iterator[dict]]:
    """`/generate`: the round's texts as they are generated, then its scores in `page.round`."""
    rnd, status = page.round, page.status

    @refusals
    def generate(prompt: str, system: str, k: float, mode: str, model_a: str, model_b: str, model_c: str,
                 model_d: str, temperature: float, top_p: float, top_k: float, max_new_tokens: float,
                 repetition_penalty: float, seed: float, beta: float, request: gr.Request) -> Iterator[dict]:
        # The parameter names are /generate's keyword names for gradio_client.
        current = new_round(state, RoundRequest(prompt, system, k, mode, model_a, model_b, model_c, model_d,
                                                temperature, top_p, top_k, max_new_tokens, repetition_penalty,
                                                seed, beta))
        stream = voting.generate_round(state, current, request.session_hash if request else "", STREAM_INTERVAL)
        final = next(stream)  # the scheduler takes the rows, or refuses (busy) while the page is as it was
        yield {rnd: current, status: "Generating…", **texts_update(page, final.texts)}
        try:
            for final in stream:
                yield {status: "Generating…", **texts_update(page, final.texts)}
            yield {status: "Scoring…", **texts_update(page, final.texts)}
            scored = voting.score_generated(state, current, final)
        except Exception:
            yield {status: "Generation failed: nothing to vote on."}  # the error says why
            raise
        yield {rnd: scored, **texts_update(page, scored.texts),
               status: ("Stopped early. " if STOPPED in final.endings else "") + "Vote below"
               + (" (names are revealed after your vote)." if current.anonymous else ".")}

    return generate


def hold_handler(state: AppState, page: PlaygroundPage) -> Callable[..., dict]:
    """At a click on Generate: the new round's headers, empty texts and scores, and every vote
    locked, at once; nothing when `/generate` will refuse these settings (it says why)."""

    def hold(*values: object) -> dict:
        try:
            pending = new_round(state, RoundRequest(*values))
        except (PlaygroundError, gr.Error):  # /generate's to report, once
            return gr.skip()
        return {**round_view(state, page, pending), **buttons_view(page, None)}

    return hold


def voted(page: PlaygroundPage, current: Round, stored: StoredVote) -> dict:
    """A pairwise vote stored: the round is closed, and the status names every slot's model."""
    vote = stored.vote
    models = ", ".join(f"{LETTERS[i]} {revealed(r.model, r.rated_as or r.model)}" for i, r in enumerate(vote.responses))
    return {page.round: replace(current, voted_at=vote.created_at),
            page.status: f"Vote #{stored.id} stored as **{vote.outcome.replace('_', ' ')}** by {vote.voter}: "
                         f"{models}."}


def single_voted(page: PlaygroundPage, current: Round, stored: StoredSingleVote) -> dict:
    vote = stored.vote
    return {page.round: replace(current, thumbs=(*current.thumbs, vote.slot)),
            page.status: f"Single vote #{stored.id} stored: {THUMB_LABELS[vote.thumb]} on {LETTERS[vote.slot]} by "
                         f"{vote.voter} (trains KTO; the pairwise vote is separate)."}

