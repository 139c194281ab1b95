"""Voting: a playground round from its start to the stored vote, and the Vote tab's queue. The
Playground tab, the Vote tab, a gradio_client user and a Python script call these same functions.

Every vote names each response's model twice: as shown (`Response.model`: "policy", "reference",
a checkpoint id) and as rated (`Response.rated_as`, what the leaderboard counts), decided by the
weights that generated the response (`Catalog.rated_name` of `Generation.weights`): "policy" is
the checkpoint that served when its row started, and the SFT weights under any name (a reference
with them, a fresh policy) are "sft". A pre-generated response keeps the name of the checkpoint
that generated it, whatever serves when the vote is cast.
"""

import random
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial

from playground.core.beta import check_beta
from playground.core.chat import Message
from playground.data.prompt_sets import PromptSet
from playground.data.queue import (
    ALL_FLAWED,
    QueueItem,
    VoterProgress,
    next_item,
    queue_single_vote,
    queue_vote,
    voter_progress,
)
from playground.data.single_votes import SingleVote
from playground.data.votes import Vote
from playground.inference.generation import Generation, stream_generate
from playground.inference.settings import GenerationSettings
from playground.scoring.rounds import Round, battle_models, check_slots, make_single_vote, make_vote, score_round
from service.pregenerate import fill_prompt
from service.prompt_sets import prompt_set
from service.state import AppState

STREAMING_ROWS = 16  # rows decoding before a round's streamed updates are spaced out (generate_round)
SYNC_MAX_AGE = 1.0  # seconds: a round starts on checkpoints at most this stale (one store read per second)
ALL_FLAWED_ANSWER = "all_flawed"  # the queue API's name for "All flawed" on k > 2 responses (stored as both_bad)
FRESH_POLICY_LABEL = "policy (equal to SFT until trained)"


@dataclass(frozen=True)
class StoredVote:
    id: int
    vote: Vote  # as stored, `id` set


@dataclass(frozen=True)
class StoredSingleVote:
    id: int
    vote: SingleVote  # as stored, `id` set


@dataclass(frozen=True)
class QueueTurn:
    """What a voter sees in a set's queue: the next item (None when nothing is left for them) and
    how far they are."""

    pset: PromptSet
    item: QueueItem | None
    progress: VoterProgress


def slot_choices(state: AppState) -> list[tuple[str, str]]:
    """(label, name) of every model a response slot can take; a fresh policy says that it is the
    SFT model (its votes are rated as "sft")."""
    return [(FRESH_POLICY_LABEL if name == "policy" and state.models.policy_is_sft else name, name)
            for name in state.slot_catalog()]


def start_round(state: AppState, messages: Sequence[Message], slots: Sequence[str] | None,
                settings: GenerationSettings, beta: float, rng: random.Random | None = None) -> Round:
    """A new playground round: `slots` are the catalog names of the k models, or None for an
    anonymous battle (two models with different weights drawn from `rng`). The rated names are set
    when it is scored, from the weights that generated each response (`score_generated`)."""
    state.sync_checkpoints(SYNC_MAX_AGE)  # what other replicas on the store trained or served lately
    settings.validate()
    beta = check_beta(beta)  # before generating: scoring would refuse it only after
    catalog = state.slot_catalog()
    names = battle_models(catalog, rng or random.Random()) if slots is None else check_slots(slots, catalog)
    return Round(messages=tuple(messages), models=names, settings=settings, beta=beta, anonymous=slots is None)


def generate_round(state: AppState, rnd: Round, session: str, interval: float = 0.0) -> Iterator[Generation]:
    """Generate `rnd`'s k responses as rows of the app's one batch, yielding the state after every
    step (at most one yield per `interval` seconds, longer while more than STREAMING_ROWS rows are
    decoding, and the final one); a `stop_generation` for the
    same `session` (a browser session, or any key a script picks) ends it early, keeping what was
    written."""
    catalog = state.slot_catalog()
    # Under load, fewer updates per round: the server's work on streamed updates stays about that of
    # STREAMING_ROWS rows at `interval`, and the page stays responsive (`playground bench load`).
    interval *= max(1.0, state.scheduler.running() / STREAMING_ROWS)
    yield from stream_generate(state.scheduler, [catalog[name] for name in rnd.models], list(rnd.messages),
                               rnd.settings, state.stop_event(session), session, interval)


def stop_generation(state: AppState, session: str) -> None:
    """Stop `session`'s running generation after its current step (nothing when none runs)."""
    event = state.stop_events.get(session)
    if event is not None:
        event.set()


def score_generated(state: AppState, rnd: Round, final: Generation) -> Round:
    """`rnd` with the scores of its finished generation: log-probs, implicit rewards, the KL
    estimate on the sampled ids where the sampling and the weights allow one, and the rated names."""
    return score_round(state.scorer, state.catalog, rnd, final)


def record_vote(state: AppState, target: Round | QueueItem, outcome: str, voter: str,
                ranking: Sequence[int] | None = None) -> StoredVote:
    """Make the vote's record and store it: on a scored playground `Round` (refused if it already has
    a vote), or on a queue item (refused if `voter` already voted on that prompt). `outcome` is one of
    `votes.OUTCOMES`, or `ALL_FLAWED_ANSWER` for a queue item; `ranking` lists slots best first.
    Either is refused once `voter` cast `state.max_votes_per_day` votes that (UTC) day."""
    cap = state.max_votes_per_day
    if isinstance(target, Round):
        vote = make_vote(_rated(state, target), outcome, voter, ranking)
        vote_id = state.store.votes.add(vote, daily_cap=cap)
    else:
        vote = queue_vote(target, ALL_FLAWED if outcome == ALL_FLAWED_ANSWER else outcome, voter, ranking)
        vote_id = state.store.votes.add_queue_vote(vote, daily_cap=cap)
    return StoredVote(vote_id, replace(vote, id=vote_id))


def record_single_vote(state: AppState, target: Round | QueueItem, slot: int, thumb: str, voter: str
                       ) -> StoredSingleVote:
    """Store a 👍 (`thumb` "up") or 👎 ("down") on the response in `slot` (0 = A) of a scored
    playground `Round` or a queue item, beside or instead of a pairwise vote. Refused for a response
    that already has one: in a round, see `Round.thumbs`; in the queue, the store checks."""
    if isinstance(target, Round):
        vote = make_single_vote(_rated(state, target), slot, thumb, voter)
    else:
        vote = queue_single_vote(target, slot, thumb, voter)
    vote_id = state.store.single_votes.add(vote)
    return StoredSingleVote(vote_id, replace(vote, id=vote_id))


def _rated(state: AppState, rnd: Round) -> Round:
    """A round a script built by hand names no rated models: rated by the weights serving now."""
    return rnd if rnd.rated_as else replace(rnd, rated_as=tuple(state.rated_name(n) for n in rnd.models))


def next_queue_item(state: AppState, set_name: str, voter: str, skipped: Collection[int] = (),
                    rng: random.Random | None = None) -> QueueTurn:
    """The next prompt of set `set_name` for `voter`, its responses in an order drawn from `rng`;
    a prompt lacking responses is generated now (live) and stored for the voters after this one."""
    pset = prompt_set(state, set_name)
    item = next_item(state.store, pset, voter, rng or random.Random(), skipped,
                     generate_missing=partial(fill_prompt, state, pset))
    return QueueTurn(pset, item, voter_progress(state.store, pset, voter))


def queue_progress(state: AppState, set_name: str, voter: str) -> QueueTurn:
    """`voter`'s progress in set `set_name`, with no item."""
    pset = prompt_set(state, set_name)
    return QueueTurn(pset, None, voter_progress(state.store, pset, voter))
