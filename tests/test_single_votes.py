"""Single-answer votes (👍/👎): stored apart from battles, one per response, undone like any vote,
reachable from the Playground and the queue (buttons and the `/rate`, `/queue_rate` endpoints),
and turned into TRL's unpaired rows with the both-bad responses."""

import random
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from gradio_client import Client

from playground.core.errors import PlaygroundError
from playground.data.single_votes import SingleVote, unpaired_rows
from playground.data.store import Store, open_store
from playground.data.votes import Response
from playground.inference.settings import GenerationSettings
from playground.scoring.rounds import chat_messages
from service.prompt_sets import load_example_set
from service.state import AppState
from service.voting import (
    generate_round,
    next_queue_item,
    record_single_vote,
    record_vote,
    score_generated,
    start_round,
)
from tests.conftest import PROMPT, generate_call, make_vote
from tests.postgres import on_both_backends

SAMPLED = GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4, seed=3)


def single(label: bool = True, voter: str = "ana", text: str = "Yes.", **fields) -> SingleVote:
    return SingleVote(prompt=PROMPT, response=Response("policy", text, {"reward": 0.5}, "ckpt-1"), label=label,
                      slot=0, voter=voter, **fields)


@on_both_backends
def test_single_votes_are_stored_apart_from_battles_and_undone_in_order(store: Store) -> None:
    pair_id = store.votes.add(make_vote(created_at=100.0))
    up_id = store.single_votes.add(single(True, created_at=200.0))
    store.single_votes.add(single(False, voter="bo", created_at=150.0))
    (up, down) = store.single_votes.list()
    assert up == single(True, created_at=200.0, id=up_id)  # every field read back as written
    assert (up.thumb, down.thumb, down.voter) == ("up", "down", "bo")
    assert [v.id for v in store.votes.list()] == [pair_id]  # no battle from a single vote
    assert store.votes.counts_by_voter() == {"ana": 1}
    assert store.single_votes.counts_by_voter() == {"ana": (1, 0), "bo": (0, 1)}
    # Undo takes the voter's latest, single or pairwise, by the time it was cast.
    assert store.undo_last_vote("ana") == up
    assert store.undo_last_vote("ana").id == pair_id  # type: ignore[union-attr]
    assert store.undo_last_vote("ana") is None and len(store.single_votes.list()) == 1


def test_a_single_vote_is_checked_before_it_is_stored(store: Store) -> None:
    with pytest.raises(PlaygroundError, match="label must be true"):
        single(label=1)  # type: ignore[arg-type]
    with pytest.raises(PlaygroundError, match="slot must be"):
        SingleVote(prompt=PROMPT, response=Response("policy", "x"), label=True, slot=-1, voter="ana")
    with pytest.raises(PlaygroundError, match="prompt must be a non-empty list"):
        SingleVote(prompt=[], response=Response("policy", "x"), label=True, slot=0, voter="ana")
    raw = sqlite3.connect(store.database.path)  # the database refuses what the class would: a label of 2
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("INSERT INTO single_votes (prompt, model, text, scores, slot, label, voter, settings, anonymous, "
                    "created_at) VALUES ('[]', 'm', 't', '{}', 0, 2, 'v', '{}', 0, 0)")
    assert store.single_votes.list() == []


def test_unpaired_rows_are_the_thumbs_and_both_sides_of_both_bad() -> None:
    votes = [make_vote(outcome="both_bad", texts=["bad one", "  "], id=7), make_vote(outcome="a", id=8)]
    rows = unpaired_rows(votes, [single(True, id=3), single(False, text="Nope.", id=4)])
    assert [(r.completion[0]["content"], r.label, r.extra["source"]) for r in rows] == [
        ("bad one", False, "both_bad"), ("Yes.", True, "single"), ("Nope.", False, "single")]  # blank left out
    assert rows[0].as_trl() == {"prompt": PROMPT, "completion": [{"role": "assistant", "content": "bad one"}],
                                "label": False, "model": "sft", "vote_id": 7, "voter": "ana", "source": "both_bad"}


def test_a_playground_round_takes_a_thumb_per_response_beside_its_vote(tiny_state: AppState) -> None:
    rnd = start_round(tiny_state, chat_messages("Say hi."), ["policy", "sft"], SAMPLED, 0.1, random.Random(0))
    *_, final = generate_round(tiny_state, rnd, "script")
    scored = score_generated(tiny_state, rnd, final)
    up = record_single_vote(tiny_state, scored, 0, "up", "ana")
    assert up.vote.response.text == scored.texts[0] and up.vote.response.rated_as == "sft"  # fresh policy = SFT
    assert up.vote.response.scores["reward"] == pytest.approx(scored.scores[0].reward)
    with pytest.raises(PlaygroundError, match=r"slot 2 is not one of 0\.\.1"):
        record_single_vote(tiny_state, scored, 2, "up", "ana")
    with pytest.raises(PlaygroundError, match="'up' or 'down', not 'sideways'"):
        record_single_vote(tiny_state, scored, 1, "sideways", "ana")
    with pytest.raises(PlaygroundError, match="already has your 👍/👎"):
        record_single_vote(tiny_state, replace(scored, thumbs=(0,)), 0, "down", "ana")
    record_vote(tiny_state, scored, "b", "ana")  # the pairwise vote is separate
    assert [(v.label, v.slot) for v in tiny_state.store.single_votes.list()] == [(True, 0)]
    assert [v.outcome for v in tiny_state.store.votes.list()] == ["b"]


def test_queue_thumbs_once_per_response(tiny_state: AppState) -> None:
    from service.pregenerate import choose_models

    pset = load_example_set(tiny_state).pset
    choose_models(tiny_state, pset, ["policy", "sft"], SAMPLED)
    item = next_queue_item(tiny_state, pset.name, "ana", rng=random.Random(1)).item
    assert item is not None
    stored = record_single_vote(tiny_state, item, 1, "down", "ana")
    assert stored.vote.item == item.prompt.id and stored.vote.anonymous and stored.vote.response == item.responses[1]
    with pytest.raises(PlaygroundError, match="already given this response a 👍/👎"):
        record_single_vote(tiny_state, item, 1, "up", "ana")
    record_single_vote(tiny_state, item, 1, "up", "bo")  # another voter may
    # A thumb is not the voter's queue vote: the same prompt is still theirs to vote on.
    assert next_queue_item(tiny_state, pset.name, "ana", rng=random.Random(1)).item.prompt.id == item.prompt.id


def test_rate_endpoints(tiny_app: tuple[AppState, Client], tmp_path: Path) -> None:
    state, client = tiny_app
    client.predict(**generate_call("Say hi.", max_new_tokens=4))
    assert "👍 good on A by ana" in client.predict("A", "up", "ana", api_name="/rate")
    with pytest.raises(Exception, match="Response 'C' is not on screen"):
        client.predict("C", "up", "ana", api_name="/rate")
    with pytest.raises(Exception, match="already has your"):
        client.predict("A", "down", "ana", api_name="/rate")
    assert "👎 bad on B by ana" in client.predict("B", "down", "ana", api_name="/rate")
    assert [(v.slot, v.label) for v in state.store.single_votes.list()] == [(0, True), (1, False)]
    # The queue: 👎 on B before the pairwise vote.
    client.predict(api_name="/load_example_set")
    client.predict("example", ["policy", "sft"], 1.0, 4, 0, api_name="/live_models")
    client.predict("example", "ana", api_name="/next_item")
    assert "👎 bad on B by ana" in client.predict("B", "down", "ana", api_name="/queue_rate")
    assert [v.item is not None for v in state.store.single_votes.list()] == [False, False, True]


@on_both_backends
def test_unpaired_export_reads_as_a_kto_dataset_and_imports_back(store: Store, tmp_path: Path) -> None:
    import datasets

    from playground.data.exchange import export_rows, import_file

    store.votes.add(make_vote(outcome="a", texts=["Short.", "A long answer."]))
    store.votes.add(make_vote(outcome="both_bad", texts=["Bad.", "Worse."]))
    store.votes.add(make_vote(outcome="tie"))  # no pair, not both bad: no row
    store.single_votes.add(single(True, text="Good."))
    out = tmp_path / "kto.parquet"
    assert export_rows(store, "unpaired", out) == 5
    table = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert [(r["completion"][0]["content"], r["label"]) for r in table] == [
        ("Short.", True), ("A long answer.", False), ("Bad.", False), ("Worse.", False), ("Good.", True)]
    assert table[0]["prompt"] == PROMPT and table[0]["chosen_model"] == "sft"
    export_rows(store, "unpaired", tmp_path / "kto.jsonl")
    with open_store(tmp_path / "other.sqlite") as other:
        result = import_file(other, tmp_path / "kto.jsonl")
        assert (result.kind, result.imported) == ("unpaired", 5)
        assert [(r.completion, r.label) for r in other.imports.unpaired()] == [
            (r["completion"], r["label"]) for r in table]
        assert other.imports.pairs() == []  # unpaired rows are not pairs
        assert len(other.unpaired_rows()) == 5  # and KTO trains on them
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q?", "completion": "A.", "label": true}\n{"prompt": "Q?", "completion": "B.", '
                   '"label": "maybe"}\n')
    with pytest.raises(PlaygroundError, match="line 2: 'label' must be true"):
        import_file(store, bad)
    assert store.imports.unpaired() == []  # all or nothing
