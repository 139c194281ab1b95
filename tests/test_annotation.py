"""Queue votes through `evals.annotation` and `playground.data.merge`: agreement with known answers,
position bias on simulated voters (and the votes behind a ranking's pairs), and the merged export
(majority with ties and splits, ranked pairs on a Condorcet cycle)."""

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cli.data import build_parser
from evals.agreement import wilson_interval
from evals.annotation import agreement_report
from playground.data.exchange import PARQUET_META_KEY, export_rows, meta_path
from playground.data.merge import merge_votes, vote_judgements
from playground.data.queue import next_item, queue_vote
from playground.data.store import Store
from playground.data.votes import Vote
from tests.conftest import make_vote
from tests.test_queue import make_set

PAIR = ("policy", "sft")
TRIPLE = ("policy", "reference", "sft")
PROMPT = [{"role": "user", "content": "Question?"}]


def hello_vote(shown: Sequence[str], outcome: str, voter: str, **fields: object) -> Vote:
    """This file's vote: on PROMPT, each response saying "<model> says hello" wherever it is shown."""
    return make_vote(shown, outcome, texts=[f"{m} says hello" for m in shown], scores=[{"reward": 0.0} for _ in shown],
                     prompt=PROMPT, voter=voter, **fields)


def pair_vote(item: int, voter: str, label: str, left_first: bool = True) -> Vote:
    """`label`: the winning model, "tie" or "both_bad"; shown policy-left unless left_first is False."""
    shown = PAIR if left_first else PAIR[::-1]
    outcome = "ab"[shown.index(label)] if label in shown else label
    return hello_vote(shown, outcome, voter, anonymous=True, item=item)


def rank_vote(item: int, voter: str, order: Sequence[str] | None, shown: Sequence[str] = TRIPLE) -> Vote:
    """A ranking best first, or "All flawed" (order None)."""
    if order is None:
        return hello_vote(shown, "both_bad", voter, item=item)
    return hello_vote(shown, "ranking", voter, item=item, ranking=tuple(shown.index(m) for m in order))


def item_ids(store: Store, name: str) -> list[int]:
    return [p.id or 0 for p in store.prompt_sets.prompts(store.prompt_sets.get(name).id)]


def test_perfect_agreement_is_alpha_one_whatever_side_the_responses_were_on(store: Store) -> None:
    pset = make_set(store, n=3, overlap=3)
    q = item_ids(store, "eval")
    for voter, left_first in (("ana", True), ("bo", False), ("cy", True)):
        for item, label in zip(q, ("policy", "sft", "tie"), strict=True):
            store.votes.add_queue_vote(pair_vote(item, voter, label, left_first))
    report = agreement_report(store.votes.in_set(pset.id))
    assert report.alpha.alpha == 1.0 and report.alpha.n_items == 3 and report.votes == 9
    assert report.by_voter == {"ana": (3, 3), "bo": (3, 3), "cy": (3, 3)}
    assert all(d.disagreement == 0 for d in report.disputed)


def test_a_hand_computed_alpha(store: Store) -> None:
    # Units: (policy, policy), (policy, sft), (sft, sft), (tie, tie). Coincidences: o_pp = 2, o_ps = o_sp = 1,
    # o_ss = 2, o_tt = 2; n_p = n_s = 3, n_t = 2, n = 8. D_o = 2/8, D_e = (64 - 9 - 9 - 4)/(8·7) = 42/56,
    # α = 1 - (1/4)/(3/4) = 2/3.
    pset = make_set(store, n=4, overlap=2)
    q = item_ids(store, "eval")
    for item, labels in zip(q, [("policy", "policy"), ("policy", "sft"), ("sft", "sft"), ("tie", "tie")],
                            strict=True):
        for voter, label in zip(("ana", "bo"), labels, strict=True):
            store.votes.add_queue_vote(pair_vote(item, voter, label))
    refs = {p.id or 0: p.ref for p in store.prompt_sets.prompts(pset.id)}
    report = agreement_report(store.votes.in_set(pset.id), refs)
    assert report.alpha.alpha == pytest.approx(2 / 3) and report.alpha.n_items == 4
    assert report.disputed[0].item == "q1" and report.disputed[0].disagreement == 0.5


def test_agreement_with_the_majority_of_the_others(store: Store) -> None:
    pset = make_set(store, n=1, overlap=4)
    [item] = item_ids(store, "eval")
    for voter, label in (("ana", "policy"), ("bo", "policy"), ("cy", "policy"), ("dee", "sft")):
        store.votes.add_queue_vote(pair_vote(item, voter, label, left_first=voter != "bo"))
    report = agreement_report(store.votes.in_set(pset.id))
    assert report.by_voter == {"ana": (1, 1), "bo": (1, 1), "cy": (1, 1), "dee": (0, 1)}


def test_position_bias_of_simulated_voters(store: Store) -> None:
    pset = make_set(store, n=60, overlap=3)
    rng = random.Random(11)
    policy_left = 0
    for voter in ("lefty", "fan", "neutral"):
        while (item := next_item(store, pset, voter, rng)) is not None:
            if voter == "lefty":
                outcome = "a"  # always the left one, whatever it is
            elif voter == "fan":
                outcome = "ab"[item.models.index("policy")]  # always policy, wherever it is
                policy_left += item.models[0] == "policy"
            else:
                outcome = "tie"
            store.votes.add_queue_vote(queue_vote(item, outcome, voter))
    bias = agreement_report(store.votes.in_set(pset.id)).position
    lefty, fan, neutral = (bias.by_voter[v] for v in ("lefty", "fan", "neutral"))
    assert (lefty.left_wins, lefty.decided, lefty.rate) == (60, 60, 1.0) and lefty.ci_high == pytest.approx(1.0)
    assert lefty.ci_low == pytest.approx(wilson_interval(60, 60)[0]) and lefty.ci_low > 0.9
    assert (fan.left_wins, fan.decided) == (policy_left, 60)  # the random order put policy left this often
    assert fan.ci_low < 0.5 < fan.ci_high  # a voter who follows the content shows no position bias
    assert (neutral.decided, neutral.rate) == (0, None)  # ties pick no side
    assert (bias.overall.left_wins, bias.overall.decided) == (60 + policy_left, 120)


def test_a_ranking_is_judged_pair_by_pair() -> None:
    vote = rank_vote(5, "ana", ("sft", "policy", "reference"), shown=("reference", "sft", "policy"))
    got = [(j.item, j.label, j.left, j.right) for j in vote_judgements(vote, "q5")]
    assert got == [("q5 (reference vs sft)", "sft", "reference", "sft"),
                   ("q5 (policy vs reference)", "policy", "reference", "policy"),
                   ("q5 (policy vs sft)", "sft", "sft", "policy")]
    flawed = rank_vote(5, "bo", None)
    assert {j.label for j in vote_judgements(flawed, "q5")} == {"both_bad"}


def test_position_bias_says_when_pairs_come_from_rankings(store: Store) -> None:
    pset = make_set(store, n=2, overlap=2, models=TRIPLE)
    first, second = item_ids(store, "eval")
    # Rankings shown (policy, reference, sft): ana ranks in shown order (left wins all 3 pairs), bo in
    # reverse (right wins all 3); cy calls the second prompt all flawed (no pair decided).
    store.votes.add_queue_vote(rank_vote(first, "ana", TRIPLE))
    store.votes.add_queue_vote(rank_vote(first, "bo", TRIPLE[::-1]))
    store.votes.add_queue_vote(rank_vote(second, "ana", TRIPLE))
    store.votes.add_queue_vote(rank_vote(second, "cy", None))
    bias = agreement_report(store.votes.in_set(pset.id)).position
    assert (bias.overall.left_wins, bias.overall.decided, bias.overall.n_votes) == (6, 9, 3)
    assert bias.overall.note == "9 pairs from 3 votes: pairs from rankings are not independent; interval too narrow"
    ana = bias.by_voter["ana"]
    assert (ana.left_wins, ana.decided, ana.n_votes, ana.rate) == (6, 6, 2, 1.0) and ana.note is not None
    assert (bias.by_voter["cy"].decided, bias.by_voter["cy"].n_votes, bias.by_voter["cy"].note) == (0, 0, None)
    pairs_only = agreement_report([pair_vote(1, "ana", "policy"), pair_vote(2, "ana", "sft")]).position.overall
    assert (pairs_only.decided, pairs_only.n_votes, pairs_only.note) == (2, 2, None)


@pytest.fixture
def voted(store: Store) -> Store:
    """Pair items with a clear majority, a split, and both-bad on top; ranking items with a Condorcet
    cycle and with a majority of "All flawed"; plus one playground vote (no item)."""
    make_set(store, n=3, overlap=3, name="pairs")
    make_set(store, n=2, overlap=3, models=TRIPLE, name="ranks")
    p0, p1, p2 = item_ids(store, "pairs")
    r0, r1 = item_ids(store, "ranks")
    store.votes.add(hello_vote(PAIR, "b", "solo"))
    for vote in [
        pair_vote(p0, "ana", "policy"), pair_vote(p0, "bo", "policy", left_first=False), pair_vote(p0, "cy", "tie"),
        pair_vote(p1, "ana", "policy"), pair_vote(p1, "bo", "sft"),
        pair_vote(p2, "ana", "both_bad"), pair_vote(p2, "bo", "both_bad"), pair_vote(p2, "cy", "policy"),
        # A cycle: policy > reference 2-1, reference > sft 2-1, sft > policy 2-1. Ranked pairs locks the
        # equal-margin victories by winner id, then loser id, and skips the one that closes the cycle.
        rank_vote(r0, "ana", TRIPLE), rank_vote(r0, "bo", ("reference", "sft", "policy")),
        rank_vote(r0, "cy", ("sft", "policy", "reference"), shown=("sft", "reference", "policy")),
        rank_vote(r1, "ana", None), rank_vote(r1, "bo", None), rank_vote(r1, "cy", TRIPLE),
    ]:
        store.votes.add_queue_vote(vote)
    return store


def test_merged_trl_export_drops_ties_and_splits_and_breaks_the_cycle(voted: Store, tmp_path: Path) -> None:
    out = tmp_path / "merged.jsonl"
    assert export_rows(voted, "trl", out, merge="majority", ties="drop") == 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["chosen_model"], r["rejected_model"], r["voter"]) for r in rows] == [
        ("sft", "policy", "solo"),  # the playground vote, as it was
        ("policy", "sft", "merged: 3 votes"),  # 2 policy + 1 tie
        ("policy", "reference", "merged: 3 votes"), ("policy", "sft", "merged: 3 votes"),
        ("reference", "sft", "merged: 3 votes"),  # the cycle, broken at its last-locked victory sft > policy
    ]
    meta = json.loads(meta_path(out).read_text())
    assert meta["merge"] == "majority" and meta["ties"] == "drop" and meta["rows"] == 5
    assert meta["outcomes"] == {"dropped": 3, "pair": 1, "ranking": 1}
    assert (meta["queue_items"], meta["queue_votes"]) == (5, 14)
    assert "ranked pairs" in meta["rankings"] and "plurality" in meta["pairs"]

    export_rows(voted, "trl", out)  # unmerged: every vote, and the old metadata is gone
    # solo 1; pairs: 2 + 2 + 1 (ties and both-bad give none); rankings: 3 pairs each from 3 + 1 rankings
    assert len(out.read_text().splitlines()) == 1 + 2 + 2 + 1 + 3 * 3 + 3
    assert not meta_path(out).exists()


def test_merged_arena_export_keeps_ties_when_asked(voted: Store, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "battles.parquet"
    args = build_parser().parse_args(["export", "--format", "arena", "--out", str(out), "--merge", "majority",
                                      "--ties", "keep", "--db", str(voted.database.path)])
    args.run(args)
    assert "merged by majority" in capsys.readouterr().out
    table = pq.read_table(out)
    winners = [(r["model_a"], r["model_b"], r["winner"]) for r in table.to_pylist()]
    assert winners == [
        ("policy", "sft", "model_b"),  # solo's playground vote
        ("policy", "sft", "model_a"),
        ("policy", "sft", "tie"),  # the 1-1 split, kept as a tie
        ("policy", "sft", "tie (bothbad)"),  # both_bad had the most votes
        ("policy", "reference", "model_a"), ("policy", "sft", "model_a"), ("reference", "sft", "model_a"),
        ("policy", "reference", "tie (bothbad)"), ("policy", "sft", "tie (bothbad)"),
        ("reference", "sft", "tie (bothbad)"),  # all flawed by 2 of 3: every pair both bad
    ]
    meta = json.loads(table.schema.metadata[PARQUET_META_KEY])
    assert meta["ties"] == "keep" and meta == {k: v for k, v in json.loads(meta_path(out).read_text()).items()
                                                if k != "rows"}


def test_training_on_merged_votes_gives_one_pair_per_prompt(store: Store) -> None:
    make_set(store, n=2, overlap=3)
    first, second = item_ids(store, "eval")
    for voter, label in (("ana", "policy"), ("bo", "policy"), ("cy", "sft")):  # 2:1 for policy
        store.votes.add_queue_vote(pair_vote(first, voter, label, left_first=voter != "bo"))
    for voter, label in (("ana", "policy"), ("bo", "sft")):  # a split: no majority
        store.votes.add_queue_vote(pair_vote(second, voter, label))
    assert len(store.training_pairs()) == 5  # every voter's vote
    merged = store.training_pairs(votes=merge_votes(store.votes.list()).votes)
    [pair] = merged
    assert pair.chosen == [{"role": "assistant", "content": "policy says hello"}]
    assert pair.rejected == [{"role": "assistant", "content": "sft says hello"}]
