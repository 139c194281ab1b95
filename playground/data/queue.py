"""The voting queue: which prompt of a set a voter gets next, shown how, and how far everyone is.

(Imports are absolute, so `playground.data.queue` never shadows the standard library's `queue`.)

Rules:

* A prompt is open to voter V when V has not voted on it, it has fewer votes than the set's
  `overlap`, and V has not skipped it in this session (the caller keeps the skips, per browser
  session; a skip stores nothing, so a new session sees the prompt again).
* Order: prompts whose responses are all stored first (the rest must be generated live when served,
  and a voter should not wait while a ready prompt is open), then the fewest votes, then the position
  in the imported file. Fewest votes first spreads the voters: every prompt gets its first vote
  before any gets its second, so an unfinished set still has the most prompts covered.
* The set's k models (`PromptSet.models`) are shown in an order drawn from the `random.Random` the
  caller passes (tests seed it). The vote stores the responses in that order (slot 0 = A = left),
  which is what the position-bias statistics read.

Concurrency: nothing is reserved. Two voters asking at once may get the same prompt, and both
votes are stored even when that takes it past `overlap` (a judgement someone made is never thrown
away). One voter cannot vote twice on a prompt: `store.votes.add_queue_vote` refuses it.
"""

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from playground.core.errors import PlaygroundError
from playground.data.prompt_sets import PromptSet, SetPrompt
from playground.data.single_votes import SingleVote, thumb_label
from playground.data.store import Store
from playground.data.votes import Response, Vote

ALL_FLAWED = "both_bad"  # with k > 2 the queue's "All flawed" answer is stored as outcome both_bad

# Called with a prompt and the models it lacks responses from; must store them (live generation).
GenerateMissing = Callable[[SetPrompt, list[str]], object]


@dataclass(frozen=True)
class QueueItem:
    """One prompt as one voter sees it."""

    set_name: str
    prompt: SetPrompt
    responses: tuple[Response, ...]  # in the order shown: slot 0 is A, the left one
    generation: dict[str, dict[str, Any]]  # each model's generation settings, by model name

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(r.model for r in self.responses)

    @property
    def k(self) -> int:
        return len(self.responses)


@dataclass(frozen=True)
class VoterProgress:
    voted: int  # the voter's votes in this set
    remaining: int  # prompts still open to them (skips not subtracted: they come back next session)


@dataclass(frozen=True)
class SetProgress:
    prompts: int
    ready: int  # prompts with every model's response stored
    complete: int  # prompts with at least `overlap` votes
    votes: int
    by_voter: dict[str, int]  # votes per voter, most first


def _require_models(pset: PromptSet) -> None:
    if not pset.models:
        raise PlaygroundError(f"prompt set {pset.name!r} has no models to compare yet: the admin chooses them "
                              "(pre-generate, or set them for live generation)")


def open_prompts(store: Store, pset: PromptSet, voter: str, skipped: Collection[int] = (),
                 ready_only: bool = False) -> list[SetPrompt]:
    """The prompts open to `voter`, in queue order (see the module docstring)."""
    _require_models(pset)
    voters = store.votes.voters_by_item(pset.id)
    have = store.prompt_sets.response_models(pset.id)
    needed = set(pset.models)
    candidates = []
    for prompt in _open_to(voter, store.prompt_sets.prompts(pset.id), voters, pset.overlap):
        assert prompt.id is not None and prompt.position is not None  # stored prompts have both
        if prompt.id in skipped:
            continue
        ready = needed <= have.get(prompt.id, set())
        if ready or not ready_only:
            candidates.append(((not ready, len(voters.get(prompt.id, [])), prompt.position), prompt))
    return [prompt for _, prompt in sorted(candidates, key=lambda c: c[0])]


def _open_to(voter: str, prompts: list[SetPrompt], voters: dict[int, list[str]], overlap: int) -> list[SetPrompt]:
    """The prompts `voter` has not voted on that still need votes."""
    return [p for p in prompts
            if voter not in (votes := voters.get(p.id or 0, [])) and len(votes) < overlap]


def present(store: Store, pset: PromptSet, prompt: SetPrompt, rng: random.Random) -> QueueItem:
    """The prompt with the set's models' responses in a random order drawn from `rng`."""
    assert prompt.id is not None
    stored = store.prompt_sets.responses(prompt.id)
    missing = [m for m in pset.models if m not in stored]
    if missing:
        raise PlaygroundError(f"prompt {prompt.ref!r} has no response from {', '.join(missing)} yet")
    order = list(pset.models)
    rng.shuffle(order)
    return QueueItem(
        set_name=pset.name, prompt=prompt,
        responses=tuple(Response(m, stored[m].text, stored[m].scores, stored[m].rated_as) for m in order),
        generation={m: stored[m].settings for m in order},
    )


def next_item(store: Store, pset: PromptSet, voter: str, rng: random.Random, skipped: Collection[int] = (),
              generate_missing: GenerateMissing | None = None) -> QueueItem | None:
    """The next prompt for `voter`, or None when nothing is open to them.

    Without `generate_missing` only prompts whose responses are all stored are served; with it, a
    prompt lacking some is handed to it first (live generation) and then served.
    """
    prompts = open_prompts(store, pset, voter, skipped, ready_only=generate_missing is None)
    if not prompts:
        return None
    prompt = prompts[0]
    if generate_missing is not None:
        assert prompt.id is not None
        missing = [m for m in pset.models if m not in store.prompt_sets.responses(prompt.id)]
        if missing:
            generate_missing(prompt, missing)
    return present(store, pset, prompt, rng)


def queue_vote(item: QueueItem, outcome: str, voter: str, ranking: Sequence[int] | None = None) -> Vote:
    """The record of a vote on a queue item: a normal `Vote` (so it is exported, trained on and
    undone like any other) naming its prompt in `item`, responses in the order shown, anonymous
    because the voter saw no model names. Each response is rated as the model that generated it
    (`SetResponse.rated_as`, fixed at generation), not as whatever serves when the vote is cast."""
    assert item.prompt.id is not None
    settings = {"prompt_set": item.set_name, "prompt_ref": item.prompt.ref, "generation": item.generation}
    return Vote(prompt=list(item.prompt.messages), responses=item.responses, outcome=outcome,
                ranking=tuple(ranking) if ranking is not None else None, voter=voter, settings=settings,
                anonymous=True, created_at=time.time(), item=item.prompt.id)


def queue_single_vote(item: QueueItem, slot: int, thumb: str, voter: str) -> SingleVote:
    """The record of a 👍/👎 on the response in `slot` of a queue item (settings as `queue_vote`'s)."""
    assert item.prompt.id is not None
    if type(slot) is not int or not 0 <= slot < item.k:
        raise PlaygroundError(f"response slot {slot!r} is not one of 0..{item.k - 1} (A..)")
    settings = {"prompt_set": item.set_name, "prompt_ref": item.prompt.ref,
                "generation": item.generation.get(item.responses[slot].model, {})}
    return SingleVote(prompt=list(item.prompt.messages), response=item.responses[slot], label=thumb_label(thumb),
                      slot=slot, voter=voter, settings=settings, anonymous=True, created_at=time.time(),
                      item=item.prompt.id)


def voter_progress(store: Store, pset: PromptSet, voter: str) -> VoterProgress:
    voters = store.votes.voters_by_item(pset.id)
    voted = sum(votes.count(voter) for votes in voters.values())
    return VoterProgress(voted, len(_open_to(voter, store.prompt_sets.prompts(pset.id), voters, pset.overlap)))


def set_progress(store: Store, pset: PromptSet) -> SetProgress:
    voters = store.votes.voters_by_item(pset.id)
    have = store.prompt_sets.response_models(pset.id)
    prompts = store.prompt_sets.prompts(pset.id)
    by_voter: dict[str, int] = {}
    for votes in voters.values():
        for name in votes:
            by_voter[name] = by_voter.get(name, 0) + 1
    return SetProgress(
        prompts=len(prompts),
        ready=sum(bool(pset.models) and set(pset.models) <= have.get(p.id or 0, set()) for p in prompts),
        complete=sum(len(voters.get(p.id or 0, [])) >= pset.overlap for p in prompts),
        votes=sum(by_voter.values()),
        by_voter=dict(sorted(by_voter.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
