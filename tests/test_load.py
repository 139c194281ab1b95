"""Twenty voters at once, each in its own session: every acknowledged vote is stored exactly once.

Drives the app through the load benchmark's own functions (bench/load.py), at a size a test
run can afford; `playground bench load` is the 100-voter version with timings.
"""

from pathlib import Path

import pytest

from bench.load import OUTCOMES, LoadResult, VoterResult, check_votes, run_voters, serve, voter_name
from playground.data.store import open_store
from tests.conftest import make_vote

VOTERS = 20


@pytest.mark.slow  # a load test: twenty gradio_client sessions against one server
def test_twenty_simultaneous_voters_lose_and_duplicate_nothing(tiny_model_dir: Path, home: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with serve(tiny_model_dir, home) as (state, url):
        result = run_voters(url, VOTERS, timeout=300)
        check = check_votes(state.store, result)
        stored = state.store.votes.list()

    assert result.errors == []
    assert len(result.acknowledged) == VOTERS
    assert len(set(result.acknowledged)) == VOTERS  # no two voters were told the same id
    assert check.ok, check
    assert check.stored == check.acknowledged == VOTERS
    # Each voter's one vote, under the id it was told, with its own outcome and its own round.
    by_id = {v.id: v for v in stored}
    for i, voter in enumerate(result.voters):
        vote = by_id[voter.vote_id]
        assert (vote.voter, vote.outcome) == (voter_name(i), OUTCOMES[i % len(OUTCOMES)])
        assert vote.settings["seed"] == i
        assert [r.model for r in vote.responses] == ["policy", "reference"]
    assert sorted(by_id) == sorted(result.acknowledged)


def test_the_vote_check_notices_lost_extra_and_altered_votes(tmp_path: Path) -> None:
    """The check above can fail: it compares the database with what the voters were told."""
    with open_store(tmp_path / "votes.sqlite") as store:
        def cast(i: int, outcome: str) -> int:
            return store.votes.add(make_vote(("policy", "sft"), outcome, voter=voter_name(i)))

        told = [VoterResult(voter_name(i), OUTCOMES[i], vote_id=cast(i, OUTCOMES[i])) for i in range(3)]
        result = LoadResult(told, seconds=1.0)
        assert check_votes(store, result).ok
        lost = store.undo_last_vote(voter_name(2))  # acknowledged, then gone
        extra = cast(3, "a")  # stored, never acknowledged
        again = cast(0, "tie")  # a second vote by a voter who voted once
        check = check_votes(store, result)
    assert lost is not None and not check.ok
    assert check.missing == [lost.id]
    assert check.unexpected == [extra, again]
    assert check.duplicated == sorted([told[0].vote_id, again])
