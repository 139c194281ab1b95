"""The voting queue on the store alone: order, overlap, skips, the stored random order, progress."""

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from playground.core.errors import PlaygroundError
from playground.data.prompt_sets import PromptSet, SetPrompt, SetResponse
from playground.data.queue import (
    QueueItem,
    next_item,
    open_prompts,
    queue_vote,
    set_progress,
    voter_progress,
)
from playground.data.store import Store
from tests.postgres import on_both_backends

pytestmark = on_both_backends  # every test here takes `store`: each runs on SQLite and on PostgreSQL

MODELS = ("policy", "sft")


def add_responses(store: Store, prompt: SetPrompt, models: Sequence[str]) -> None:
    assert prompt.id is not None
    store.prompt_sets.add_responses(
        [SetResponse(prompt.id, m, f"{m} answers {prompt.ref}", {"reward": 0.0}, {"seed": 1}) for m in models])


def make_set(store: Store, n: int = 3, models: Sequence[str] = MODELS, overlap: int = 1, ready: int | None = None,
             name: str = "eval") -> PromptSet:
    """A set of n prompts q0.. comparing `models`, the first `ready` (default all) with their responses."""
    prompts = [SetPrompt(f"q{i}", [{"role": "user", "content": f"Question {i}?"}]) for i in range(n)]
    pset = store.prompt_sets.add(name, f"{name}.jsonl", prompts, overlap)
    store.prompt_sets.set_queue_models(pset.id, models, {})
    for prompt in store.prompt_sets.prompts(pset.id)[:ready]:
        add_responses(store, prompt, models)
    return store.prompt_sets.get(name)


def cast(store: Store, pset: PromptSet, voter: str, rng: random.Random, outcome: str = "a",
         skipped: Sequence[int] = ()) -> QueueItem | None:
    """Take the voter's next item and vote on it; None when the queue has nothing for them."""
    item = next_item(store, pset, voter, rng, skipped)
    if item is not None:
        store.votes.add_queue_vote(queue_vote(item, outcome, voter))
    return item


def test_fewest_votes_first_then_file_order_and_overlap_ends_the_queue(store: Store) -> None:
    pset = make_set(store, n=3, overlap=2)
    rng = random.Random(0)
    served = []
    # Round-robin, as three people voting at the same pace would.
    while True:
        items = [(v, cast(store, pset, v, rng)) for v in ("ana", "bo", "cy")]
        if all(item is None for _, item in items):
            break
        served += [(v, item.prompt.ref) for v, item in items if item is not None]
    assert served == [("ana", "q0"), ("bo", "q1"), ("cy", "q2"), ("ana", "q1"), ("bo", "q0"), ("ana", "q2")]
    voters = store.votes.voters_by_item(pset.id)
    assert sorted(len(v) for v in voters.values()) == [2, 2, 2]  # every prompt exactly `overlap` votes
    assert all(len(set(v)) == len(v) for v in voters.values())  # nobody twice on a prompt
    assert all(next_item(store, pset, v, rng) is None for v in ("ana", "bo", "cy", "dee"))


def test_a_voter_cannot_vote_twice_but_a_late_vote_past_the_overlap_is_kept(store: Store) -> None:
    pset = make_set(store, n=1, overlap=1)
    rng = random.Random(1)
    # Two voters ask at the same moment: both get the only prompt, and both votes count.
    first, second = next_item(store, pset, "ana", rng), next_item(store, pset, "bo", rng)
    assert first is not None and second is not None and first.prompt.id == second.prompt.id
    store.votes.add_queue_vote(queue_vote(first, "a", "ana"))
    store.votes.add_queue_vote(queue_vote(second, "tie", "bo"))
    assert store.votes.voters_by_item(pset.id) == {first.prompt.id: ["ana", "bo"]}
    with pytest.raises(PlaygroundError, match="ana has already voted on this prompt"):
        store.votes.add_queue_vote(queue_vote(first, "b", " ana "))
    assert len(store.votes.in_set(pset.id)) == 2


def test_skips_hold_for_the_session_that_made_them(store: Store) -> None:
    pset = make_set(store, n=3)
    rng = random.Random(2)
    first = next_item(store, pset, "ana", rng)
    assert first is not None and first.prompt.ref == "q0"
    skipped = [first.prompt.id or 0]
    assert [p.ref for p in open_prompts(store, pset, "ana", skipped)] == ["q1", "q2"]
    assert cast(store, pset, "ana", rng, skipped=skipped).prompt.ref == "q1"  # type: ignore[union-attr]
    assert next_item(store, pset, "ana", rng).prompt.ref == "q0"  # type: ignore[union-attr]  # a new session


def test_the_random_order_is_drawn_from_the_callers_generator_and_stored(store: Store) -> None:
    pset = make_set(store, n=40, models=("policy", "reference", "sft"))
    items = [next_item(store, pset, "ana", random.Random(7), skipped=range(1, i + 1)) for i in range(3)]
    again = [next_item(store, pset, "ana", random.Random(7), skipped=range(1, i + 1)) for i in range(3)]
    assert [i.models for i in items if i] == [i.models for i in again if i]  # seeded: the same order again
    rng = random.Random(3)
    lefts = Counter()
    while (item := next_item(store, pset, "ana", rng)) is not None:
        vote_id = store.votes.add_queue_vote(queue_vote(item, "ranking", "ana", ranking=(2, 0, 1)))
        stored = store.votes.list()[-1]
        assert stored.id == vote_id and stored.item == item.prompt.id and stored.anonymous
        assert tuple(r.model for r in stored.responses) == item.models  # slot 0 = A = left, as shown
        assert [r.text for r in stored.responses] == [f"{m} answers {item.prompt.ref}" for m in item.models]
        assert stored.settings["prompt_set"] == "eval" and stored.settings["prompt_ref"] == item.prompt.ref
        lefts[item.models[0]] += 1
    assert sum(lefts.values()) == 40 and set(lefts) == {"policy", "reference", "sft"}
    assert min(lefts.values()) >= 5  # each model shown left about a third of the time


def test_only_ready_prompts_unless_the_caller_generates_live(store: Store) -> None:
    pset = make_set(store, n=3, ready=1)
    rng = random.Random(4)
    assert cast(store, pset, "ana", rng).prompt.ref == "q0"  # type: ignore[union-attr]
    assert next_item(store, pset, "ana", rng) is None  # q1, q2 have no responses: not served
    asked: list[tuple[str, list[str]]] = []

    def generate(prompt: SetPrompt, missing: list[str]) -> None:
        asked.append((prompt.ref, missing))
        add_responses(store, prompt, missing)

    item = next_item(store, pset, "ana", rng, generate_missing=generate)
    assert item is not None and item.prompt.ref == "q1" and asked == [("q1", ["policy", "sft"])]
    # A ready prompt is served before one that would make the voter wait, whatever its votes.
    pset2 = make_set(store, n=2, ready=0, name="later")
    add_responses(store, store.prompt_sets.prompts(pset2.id)[1], MODELS)
    assert [p.ref for p in open_prompts(store, pset2, "ana")] == ["q1", "q0"]


def test_progress_per_voter_and_overall(store: Store) -> None:
    pset = make_set(store, n=4, overlap=2, ready=3)
    rng = random.Random(5)
    for voter in ("ana", "ana", "bo", "cy"):  # ana: q0, q1; bo: q2; cy: q0 (fewest votes, file order)
        cast(store, pset, voter, rng)
    ana, bo, cy, new = (voter_progress(store, pset, v) for v in ("ana", "bo", "cy", "dee"))
    assert (ana.voted, ana.remaining) == (2, 2)  # q2, and q3 (waiting for responses, but still to do)
    assert (bo.voted, bo.remaining) == (1, 2)  # q0 is full; q1, q3
    assert (cy.voted, cy.remaining) == (1, 3)
    assert (new.voted, new.remaining) == (0, 3)
    overall = set_progress(store, pset)
    assert (overall.prompts, overall.ready, overall.complete, overall.votes) == (4, 3, 1, 4)
    assert overall.by_voter == {"ana": 2, "bo": 1, "cy": 1}


def test_a_set_without_models_says_so(store: Store) -> None:
    pset = store.prompt_sets.add("bare", "bare.jsonl", [SetPrompt("1", [{"role": "user", "content": "hi"}])])
    with pytest.raises(PlaygroundError, match="no models to compare yet"):
        next_item(store, pset, "ana", random.Random(0))
