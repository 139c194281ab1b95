"""`--max-votes-per-day`: a voter's pairwise votes per UTC day are capped at vote time, on the
Playground's rounds and the Vote tab's queue alike; the vote over the cap is refused with a message
naming the limit, and nothing of it is stored."""

import random

import pytest

from cli.serve import parse_args
from playground.core.errors import PlaygroundError
from playground.data.store.votes import DAY
from playground.inference.settings import GenerationSettings
from playground.scoring.rounds import chat_messages
from service.pregenerate import choose_models
from service.prompt_sets import EXAMPLE_SET, load_example_set
from service.state import AppState
from service.voting import generate_round, next_queue_item, record_vote, score_generated, start_round
from tests.conftest import SAMPLED, make_vote

SHORT = GenerationSettings(**SAMPLED)


def scored_round(state: AppState):
    rnd = start_round(state, chat_messages("Say hi."), ["policy", "reference"], SHORT, 0.1, random.Random(0))
    *_, final = generate_round(state, rnd, "script")
    return score_generated(state, rnd, final)


def test_the_vote_over_the_daily_cap_is_refused_and_not_stored(tiny_state: AppState) -> None:
    state = tiny_state
    state.max_votes_per_day = 2
    choose_models(state, load_example_set(state).pset, ["policy", "reference"], SHORT)  # live generation in the queue
    record_vote(state, scored_round(state), "a", "ana")
    item = next_queue_item(state, EXAMPLE_SET, "ana").item
    assert item is not None
    record_vote(state, item, "b", "ana")  # the queue counts towards the same cap
    with pytest.raises(PlaygroundError, match=r"ana has cast 2 votes today \(UTC\).*--max-votes-per-day 2"):
        record_vote(state, scored_round(state), "a", "ana")
    with pytest.raises(PlaygroundError, match="--max-votes-per-day 2"):
        record_vote(state, next_queue_item(state, EXAMPLE_SET, "ana").item, "a", "ana")
    assert [v.voter for v in state.store.votes.list()] == ["ana", "ana"]
    record_vote(state, scored_round(state), "tie", "bo")  # another voter has a cap of their own
    assert len(state.store.votes.list()) == 3


def test_the_cap_counts_the_votes_of_the_vote_s_utc_day(tiny_state: AppState) -> None:
    votes = tiny_state.store.votes
    noon = 20_000 * DAY + DAY / 2
    votes.add(make_vote(("policy", "sft"), "a", voter="cy", created_at=noon - DAY), daily_cap=1)  # yesterday
    votes.add(make_vote(("policy", "sft"), "a", voter="cy", created_at=noon), daily_cap=1)
    with pytest.raises(PlaygroundError, match="cy has cast 1 votes today"):
        votes.add(make_vote(("policy", "sft"), "b", voter="cy", created_at=noon + 3600), daily_cap=1)
    votes.add(make_vote(("policy", "sft"), "b", voter="cy", created_at=noon + DAY / 2), daily_cap=1)  # next day, 0:00
    assert votes.cast_on_day("cy", noon) == 1 and votes.cast_on_day("cy", noon + DAY) == 1
    votes.add(make_vote(("policy", "sft"), "b", voter="cy", created_at=noon + 60))  # no cap given: stored
    assert votes.cast_on_day("cy", noon) == 2


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_cap_below_one_is_a_flag_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--max-votes-per-day", value])
    assert f"--max-votes-per-day {value}: expected a number of votes ≥ 1" in capsys.readouterr().err
