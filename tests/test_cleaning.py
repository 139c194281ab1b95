"""Cleaning battles (evals.cleaning): identity leaks, outlier voters (Arena's test and ours),
duplicate prompts and repeat votes, daily caps; each rule flags, and the cleaned ratings are the
better ones."""

import json

import numpy as np
import pytest

from evals.battle import Battle
from evals.cleaning import CleaningConfig, arena_outliers, clean, fair_coin_p, kept, own_names
from evals.ratings.bradley_terry import ELO_PER_LOGIT, aggregate, fit_ratings
from evals.ratings.indexed import index_battles
from playground.core.errors import PlaygroundError

TRUTH = {f"m{k}": 40.0 * k for k in range(6)}  # Elo, near-equal models 40 apart
LEAKS = ("I am SmolLM, a model trained by Hugging Face.", "As ChatGPT, made by OpenAI, I think so.")


def battle(a: str, b: str, a_wins: bool, voter: str, n: int, text: str = "") -> Battle:
    prompt = [{"role": "user", "content": f"question {n}"}]
    return Battle(a, b, "model_a" if a_wins else "model_b", voter=voter, anonymous=True, vote_id=n,
                  prompt=prompt, texts=(f"answer {n} one{text}", f"answer {n} two"), tstamp=1.7e9 + n)


def simulate(honest: int, bad: bool, seed: int, votes: int = 60) -> tuple[list[Battle], set[int]]:
    """Honest voters vote by Bradley–Terry on TRUTH, in random order; with `bad`, 'clicker' always
    picks A and 'contrarian' the weaker model; 12 of the honest battles leak an identity. Returns the
    battles and the indexes of the leaked ones."""
    rng = np.random.default_rng(seed)
    models = sorted(TRUTH)
    voters = [f"honest-{v}" for v in range(honest)] + (["clicker", "contrarian"] if bad else [])
    out, leaked = [], set()
    for voter in voters:
        for _ in range(votes):
            a, b = rng.choice(models, 2, replace=False)
            p_a = 1 / (1 + np.exp(-(TRUTH[a] - TRUTH[b]) / ELO_PER_LOGIT))
            a_wins = {"clicker": True, "contrarian": TRUTH[a] < TRUTH[b]}.get(voter, rng.random() < p_a)
            out.append(battle(str(a), str(b), bool(a_wins), voter, len(out)))
    for n in rng.choice([k for k, b in enumerate(out) if b.voter.startswith("honest")], 12, replace=False):
        out[n] = battle(out[n].model_a, out[n].model_b, out[n].winner == "model_a", out[n].voter, int(n),
                        " " + LEAKS[len(leaked) % 2])
        leaked.add(int(n))
    return out, leaked


def rating_error(battles: list[Battle]) -> float:
    indexed = index_battles(battles)
    fitted = fit_ratings(aggregate(indexed), anchor=0)
    truth = np.array([TRUTH[m] for m in indexed.models])
    return float(np.sqrt(np.mean(((fitted - fitted.mean()) - (truth - truth.mean())) ** 2)))


def test_the_report_flags_the_two_bad_voters_and_every_leak_and_cleaning_brings_ratings_closer() -> None:
    battles, leaked = simulate(honest=8, bad=True, seed=1)
    report = clean(battles, CleaningConfig(extra_words=own_names(["SmolLM2-135M-Instruct"])))
    assert {e.voter for e in report.outlier_voters} == {"clicker", "contrarian"}
    assert {n for n, f in enumerate(report.flags) if any(x.startswith("identity:") for x in f)} == leaked
    assert report.identity_words == {"smollm": 6, "chatgpt": 6}
    ours = {e.voter: e for e in report.outlier_voters if e.test == "position+agreement"}
    assert set(ours) == {"clicker", "contrarian"} and all(e.statistic <= 0.05 for e in ours.values())
    assert "A chosen in" in ours["clicker"].detail
    cleaned = kept(battles, report)
    assert len(cleaned) == len(battles) - 120 - 12
    assert rating_error(cleaned) < 0.5 * rating_error(battles)


def test_arena_s_test_alone_misses_the_voter_who_always_clicks_a() -> None:
    """Why ours runs beside it: Arena's e-values compare each vote with the pair's crowd, oriented by
    the pair's alphabetical order; a voter who always picks the answer shown first, in randomised
    order, looks like the crowd to it."""
    battles, _ = simulate(honest=8, bad=True, seed=1)
    assert "clicker" not in {e.voter for e in arena_outliers(battles, CleaningConfig())}


@pytest.mark.parametrize("seed", [2, 3])
def test_twenty_honest_voters_are_never_flagged(seed: int) -> None:
    battles, leaked = simulate(honest=20, bad=False, seed=seed)
    report = clean(battles)
    assert report.outlier_voters == ()
    # Our words list knows ChatGPT but not SmolLM unless told: only half the leaks are caught.
    assert {n for n, f in enumerate(report.flags) if f} < leaked


def test_arena_s_e_values_cross_on_a_lopsided_pair() -> None:
    """A pair the crowd decides 95 : 5; a voter taking the 5% side six times is flagged at the
    sixth vote's product (2 · 0.05)^-k crossing 20 at k = 2, counted from the first vote."""
    crowd = [battle("m0", "m1", True, f"v{k % 10}", k) for k in range(95)] + \
            [battle("m0", "m1", False, f"v{k % 10}", 95 + k) for k in range(5)]
    odd = [battle("m0", "m1", False, "odd", 200 + k) for k in range(6)]
    [evidence] = [e for e in arena_outliers(crowd + odd, CleaningConfig()) if e.voter == "odd"]
    assert evidence.votes == 2 and evidence.statistic == pytest.approx(1 / (2 * 11 / 106) ** 2)


def test_duplicate_prompts_keep_a_seeded_sample_and_repeat_votes_count_once() -> None:
    many = [Battle("m0", "m1", "model_a", voter=f"v{k}", prompt=[{"role": "user", "content": "hi"}],
                   texts=(f"a{k}", f"b{k}")) for k in range(30)]
    rest = [Battle("m0", "m1", "model_b", voter="w", prompt=[{"role": "user", "content": f"q{k}"}],
                   texts=("x", "y")) for k in range(20)]
    again = Battle("m1", "m0", "model_a", voter="w", prompt=[{"role": "user", "content": "q3"}], texts=("y", "x"))
    report = clean(many + rest, CleaningConfig(dedup_percentile=0.5, outliers=False))
    assert report.duplicated_prompts == {"hi\n": (30, 1)}  # the median count is 1: "hi" keeps one battle
    assert sum("duplicate-prompt" in f for f in report.flags) == 29
    assert report.flags == clean(many + rest, CleaningConfig(dedup_percentile=0.5, outliers=False)).flags  # seeded
    repeated = clean(many + rest + [again], CleaningConfig(dedup_percentile=1.0, outliers=False))
    assert repeated.flags[-1] == ("repeat-vote",) and repeated.excluded == 1  # the same answers, other order


def test_the_daily_cap_keeps_each_voter_s_first_votes_of_a_utc_day() -> None:
    day = 86_400 * 20_000
    battles = [Battle("m0", "m1", "model_a", voter=v, tstamp=day + t)
               for v, t in [("a", 10), ("a", 20), ("a", 30), ("b", 40), ("a", 86_400 + 5)]]
    report = clean(battles, CleaningConfig(max_votes_per_day=2, outliers=False))
    assert [bool(f) for f in report.flags] == [False, False, True, False, False]
    assert report.capped_voters == {"a": 1} and report.counts() == {"over-daily-cap": 1}


def test_a_named_battle_is_no_leak_and_bad_settings_are_listed_at_once() -> None:
    named = Battle("m0", "m1", "model_a", anonymous=False, texts=("I am Claude.", "hi"))
    assert clean([named]).flags == ((),)
    with pytest.raises(PlaygroundError, match=r"alpha 2: .*; min_votes 0: .*; dedup_percentile 0"):
        clean([named], CleaningConfig(alpha=2, min_votes=0, dedup_percentile=0))


def test_fair_coin_p_is_the_exact_two_sided_binomial_p() -> None:
    assert fair_coin_p(5, 10) == 1.0
    assert fair_coin_p(0, 5) == pytest.approx(2 / 32) and fair_coin_p(10, 10) == pytest.approx(2 / 1024)
    assert fair_coin_p(2, 10) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_honest_voters_are_flagged_rarely() -> None:
    """Forty simulated teams of 20 honest voters: a team with any voter flagged is rare (ours holds
    the chance at α = 0.05 by Holm's correction; Arena's test adds its own few). Measured: 3 of 40."""
    flagged = sum(bool(clean(simulate(honest=20, bad=False, seed=seed)[0],
                             CleaningConfig(identity=False, duplicates=False)).outlier_voters)
                  for seed in range(100, 140))
    assert flagged <= 6


def arena_row(b: Battle) -> dict:
    """A battle as a row of Chatbot Arena's own format."""
    return {"model_a": b.model_a, "model_b": b.model_b, "winner": b.winner, "judge": b.voter, "anony": b.anonymous,
            "tstamp": b.tstamp, "question_id": f"q{b.vote_id}",
            "conversation_a": [*b.prompt, {"role": "assistant", "content": b.texts[0]}],
            "conversation_b": [*b.prompt, {"role": "assistant", "content": b.texts[1]}]}


def test_playground_clean_writes_every_row_with_its_flags_and_the_ratings_leave_them_out(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.clean import main as clean_main
    from cli.ratings import main as ratings_main

    battles, leaked = simulate(honest=8, bad=True, seed=1)
    src, out, report = tmp_path / "battles.jsonl", tmp_path / "cleaned.jsonl", tmp_path / "report.json"
    src.write_text("".join(json.dumps(arena_row(b)) + "\n" for b in battles))
    assert clean_main(["--battles", str(src), "--out", str(out), "--report", str(report),
                       "--identity-word", "SmolLM"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(battles) and rows[0]["question_id"] == "q0"  # Arena's own fields kept
    assert {n for n, r in enumerate(rows) if any(f.startswith("identity:") for f in r["flags"])} == leaked
    assert {r["judge"] for r in rows if any(f.startswith("outlier-voter") for f in r["flags"])} == {
        "clicker", "contrarian"}
    assert all(r["dedup_tag"] == {"high_freq": False, "sampled": True} for r in rows)
    summary = json.loads(report.read_text())
    assert summary["excluded"] == 132 and summary["identity_words"] == {"smollm": 6, "chatgpt": 6}
    assert "outlier voter clicker (position+agreement, 60 votes)" in capsys.readouterr().out
    ratings = tmp_path / "ratings.json"
    assert ratings_main(["--battles", str(src), "--out", str(ratings), "--bootstrap", "0"]) == 0
    assert "cleaning left out 126 of 600 battles" in capsys.readouterr().out  # SmolLM is no word of Arena's
    assert ratings_main(["--battles", str(src), "--out", str(ratings), "--bootstrap", "0", "--no-clean"]) == 0
    assert "cleaning left out" not in capsys.readouterr().out
    with pytest.raises(PlaygroundError, match=r"alpha 0\.0: expected a level between 0 and 1"):
        clean_main(["--battles", str(src), "--out", str(out), "--alpha", "0"])


def test_kept_leaves_out_only_the_named_rules_battles() -> None:
    leak = Battle("m0", "m1", "model_a", voter="a", anonymous=True, texts=("I am Claude.", "hi"),
                  prompt=[{"role": "user", "content": "q"}], tstamp=0.0)
    again = Battle("m0", "m1", "model_b", voter="a", anonymous=True, texts=("I am Claude.", "hi"),
                   prompt=[{"role": "user", "content": "q"}], tstamp=1.0)
    report = clean([leak, again], CleaningConfig(dedup_percentile=1.0, max_votes_per_day=1))
    assert report.flags == (("identity:claude",), ("identity:claude", "repeat-vote", "over-daily-cap"))
    assert kept([leak, again], report, ["duplicates"]) == [leak]
    assert kept([leak, again], report, []) == [leak, again]
    assert kept([leak, again], report) == []
    with pytest.raises(PlaygroundError, match="unknown cleaning rule"):
        kept([leak, again], report, ["length"])
