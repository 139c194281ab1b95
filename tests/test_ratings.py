"""Ratings from pairwise battles: Bradley–Terry fit, bootstrap intervals, online Elo, input and CLI."""

import csv
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.ratings import main
from evals.battle import parse_battles
from evals.battles import read_battles
from evals.ratings.bradley_terry import ANCHOR_RATING, ELO_PER_LOGIT, aggregate, fit_log_strengths
from evals.ratings.indexed import IndexedBattles, index_battles
from evals.ratings.online_elo import online_elo
from evals.ratings.results import compute_ratings, to_json
from evals.ratings.style import STYLE_FEATURES, bootstrap_style, fit_style_strengths, style_data, style_features
from evals.winrate import win_rate
from playground.core.errors import PlaygroundError
from playground.data.votes import ARENA_WINNERS, win_score

REPO = Path(__file__).resolve().parents[1]
TRUE = {"sft": 1000.0, "alpha": 1180.0, "beta": 1090.0, "gamma": 1040.0, "delta": 960.0, "eps": 900.0,
        "zeta": 850.0, "eta": 780.0}
FLIP = {"model_a": "model_b", "model_b": "model_a", "tie": "tie", "tie (bothbad)": "tie (bothbad)"}


def simulate(true: dict[str, float], n: int, seed: int) -> list[dict[str, str]]:
    """Battles between random pairs with ties whose expected score is still the Bradley–Terry
    probability: P(tie) = t = 0.6 min(p, 1 − p), P(a wins | no tie) = (p − t/2) / (1 − t)."""
    rng = np.random.default_rng(seed)
    names = list(true)
    a = rng.integers(0, len(names), n)
    b = (a + rng.integers(1, len(names), n)) % len(names)
    ratings = np.array([true[k] for k in names])
    p = 1.0 / (1.0 + 10.0 ** ((ratings[b] - ratings[a]) / 400.0))
    tie = 0.6 * np.minimum(p, 1.0 - p)
    win = (p - tie / 2) / (1.0 - tie)
    is_tie, a_won = rng.random(n) < tie, rng.random(n) < win
    bothbad = rng.random(n) < 0.3
    winner = np.where(is_tie, np.where(bothbad, "tie (bothbad)", "tie"), np.where(a_won, "model_a", "model_b"))
    return [{"model_a": names[i], "model_b": names[j], "winner": str(w)} for i, j, w in zip(a, b, winner, strict=True)]


def indexed(rows: list[dict[str, Any]]) -> IndexedBattles:
    """Arena rows as the fits read them."""
    return index_battles(parse_battles(rows))


def battles(*spec: tuple[str, str, str, int]) -> list[dict[str, str]]:
    """Rows from (model_a, model_b, winner, how many) tuples."""
    return [{"model_a": a, "model_b": b, "winner": w} for a, b, w, count in spec for _ in range(count)]


@pytest.fixture(scope="module")
def simulated_rows() -> list[dict[str, str]]:
    return simulate(TRUE, 4000, seed=7)


@pytest.fixture(scope="module")
def simulated(simulated_rows: list[dict[str, str]]) -> Any:
    return compute_ratings(indexed(simulated_rows), bootstrap=1000, seed=3)


def test_recovers_known_ratings_within_the_intervals(simulated: Any) -> None:
    board = simulated.leaderboard
    assert simulated.anchor == "sft" and board.loc["sft", "rating"] == ANCHOR_RATING
    error = {m: board.loc[m, "rating"] - TRUE[m] for m in TRUE}
    assert max(abs(e) for e in error.values()) < 40, error
    covered = [m for m in TRUE if m != "sft" and board.loc[m, "ci_low"] <= TRUE[m] <= board.loc[m, "ci_high"]]
    assert len(covered) >= 6, (covered, board)
    widths = (board["ci_high"] - board["ci_low"]).drop("sft")
    assert widths.between(20, 120).all(), widths  # ~1000 battles a model: intervals of tens of points
    assert list(board.index) == sorted(TRUE, key=lambda m: -TRUE[m])  # true order recovered
    assert list(board["rank"]) == list(range(1, 9))
    assert simulated.warnings == ()


def test_interval_widths_match_the_sandwich_standard_errors(simulated: Any,
                                                           simulated_rows: list[dict[str, str]]) -> None:
    # Resampling battles estimates Var θ̂ ≈ H⁻¹ J H⁻¹ (H: Fisher information, J: Σ (s − p)² d dᵀ, which
    # ties make smaller than H), so a 95% percentile interval spans ≈ 2 · 1.96 standard errors.
    b = indexed(simulated_rows)
    others = [m for m in b.models if m != "sft"]
    theta = (simulated.leaderboard.loc[list(b.models), "rating"].to_numpy() - 1000.0) * math.log(10) / 400
    d = np.zeros((len(b), len(b.models)))
    d[np.arange(len(b)), b.a], d[np.arange(len(b)), b.b] = 1.0, -1.0
    d = d[:, [b.models.index(m) for m in others]]  # the anchor is fixed
    p = 1.0 / (1.0 + np.exp(theta[b.b] - theta[b.a]))
    h_inv = np.linalg.inv(d.T @ (d * (p * (1 - p))[:, None]))
    se = np.sqrt(np.diag(h_inv @ (d.T @ (d * ((b.score_a - p) ** 2)[:, None])) @ h_inv)) * 400 / math.log(10)
    width = (simulated.leaderboard["ci_high"] - simulated.leaderboard["ci_low"])[others].to_numpy()
    np.testing.assert_allclose(width / (2 * 1.96 * se), 1.0, atol=0.12)


def test_two_models_match_the_closed_form() -> None:
    # 30 wins in 40 (or 20 wins + 20 ties: the same 30 points) → R_A − R_B = 400 log10(30/10)
    for rows in (battles(("A", "B", "model_a", 30), ("A", "B", "model_b", 10)),
                 battles(("A", "B", "model_a", 20), ("B", "A", "tie", 10), ("A", "B", "tie (bothbad)", 10))):
        board = compute_ratings(indexed(rows), bootstrap=0, anchor="B").leaderboard
        assert board.loc["B", "rating"] == 1000.0
        assert board.loc["A", "rating"] - 1000.0 == pytest.approx(400 * math.log10(3), abs=0.05)
        assert board["ci_low"].isna().all() and board["ci_high"].isna().all()


def test_counts_and_matrices(simulated: Any, simulated_rows: list[dict[str, str]]) -> None:
    board, n = simulated.leaderboard, simulated.battles
    assert list(n.index) == list(n.columns) == list(board.index)
    assert (n.to_numpy() == n.to_numpy().T).all() and (np.diag(n.to_numpy()) == 0).all()
    assert n.to_numpy().sum() == 2 * 4000 and (n.sum(axis=1) == board["n_battles"]).all()
    assert (board["wins"] + board["losses"] + board["ties"] == board["n_battles"]).all()
    assert board["wins"].sum() == board["losses"].sum()
    alpha_beta = [r for r in simulated_rows if {r["model_a"], r["model_b"]} == {"alpha", "beta"}]
    points = sum(1.0 if r["winner"] == ("model_a" if r["model_a"] == "alpha" else "model_b")
                 else 0.5 if r["winner"].startswith("tie") else 0.0 for r in alpha_beta)
    assert simulated.win_fraction.loc["alpha", "beta"] == pytest.approx(points / len(alpha_beta))
    wf = simulated.win_fraction.to_numpy()
    assert np.isnan(np.diag(wf)).all()
    np.testing.assert_allclose((wf + wf.T)[~np.eye(8, dtype=bool)], 1.0)
    p = simulated.predicted.to_numpy()
    np.testing.assert_allclose(p + p.T, 1.0, atol=1e-12)
    r = board["rating"].to_numpy()
    np.testing.assert_allclose(p, 1.0 / (1.0 + 10.0 ** ((r[None, :] - r[:, None]) / 400.0)), atol=1e-12)


def test_invariant_to_battle_order_sides_and_order_preserving_names(simulated_rows: list[dict[str, str]]) -> None:
    rng = np.random.default_rng(0)
    shuffled = [simulated_rows[k] for k in rng.permutation(len(simulated_rows))]
    flipped = [{"model_a": r["model_b"], "model_b": r["model_a"], "winner": FLIP[r["winner"]]} if rng.random() < 0.5
               else r for r in shuffled]
    renamed = [{**r, "model_a": "m-" + r["model_a"], "model_b": "m-" + r["model_b"]} for r in flipped]
    base = compute_ratings(indexed(simulated_rows), bootstrap=200, seed=5).leaderboard
    other = compute_ratings(indexed(renamed), bootstrap=200, seed=5, anchor="m-sft").leaderboard
    assert list(other.index) == ["m-" + m for m in base.index]
    for column in ("rating", "ci_low", "ci_high"):
        np.testing.assert_allclose(other[column].to_numpy(), base[column].to_numpy(), rtol=0, atol=1e-9)
    for column in ("n_battles", "wins", "losses", "ties", "rank"):
        assert (other[column].to_numpy() == base[column].to_numpy()).all()


def test_swapping_sides_with_the_winner_flipped_changes_nothing(simulated_rows: list[dict[str, str]]) -> None:
    swapped = [{"model_a": r["model_b"], "model_b": r["model_a"], "winner": FLIP[r["winner"]]} for r in simulated_rows]
    base = to_json(compute_ratings(indexed(simulated_rows), bootstrap=100, seed=1))
    other = to_json(compute_ratings(indexed(swapped), bootstrap=100, seed=1))
    for data in (base, other):  # online Elo follows the battles' order and sides exactly; not compared
        for model in data["models"].values():
            model.pop("online_elo")
    assert json.dumps(base) == json.dumps(other)


def test_any_renaming_keeps_the_point_ratings(simulated_rows: list[dict[str, str]]) -> None:
    # Reversing the alphabetical order changes the bootstrap's cell order (so its draws) but not the fit.
    rename = {m: f"{chr(ord('z') - k)}-{m}" for k, m in enumerate(sorted(TRUE))}
    renamed = [{**r, "model_a": rename[r["model_a"]], "model_b": rename[r["model_b"]]} for r in simulated_rows]
    base = compute_ratings(indexed(simulated_rows), bootstrap=0).leaderboard["rating"]
    other = compute_ratings(indexed(renamed), bootstrap=0, anchor=rename["sft"]).leaderboard["rating"]
    for model in TRUE:
        assert other[rename[model]] == pytest.approx(base[model], abs=1e-9)


def test_anchor_only_shifts_ratings_and_seed_drives_the_intervals(simulated_rows: list[dict[str, str]]) -> None:
    b = indexed(simulated_rows)
    base = compute_ratings(b, bootstrap=50, seed=0).leaderboard
    shifted = compute_ratings(b, bootstrap=50, seed=0, anchor="eta").leaderboard
    assert shifted.loc["eta", "rating"] == 1000.0
    assert shifted.loc["eta", "ci_low"] == shifted.loc["eta", "ci_high"] == 1000.0
    offset = 1000.0 - base.loc["eta", "rating"]
    np.testing.assert_allclose(shifted["rating"], base["rating"] + offset, atol=1e-9)
    again = compute_ratings(b, bootstrap=50, seed=0).leaderboard
    reseeded = compute_ratings(b, bootstrap=50, seed=1).leaderboard
    assert (again["ci_low"] == base["ci_low"]).all()
    assert (reseeded["ci_low"].drop("sft") != base["ci_low"].drop("sft")).all()
    with pytest.raises(PlaygroundError, match=r"unknown anchor 'gpt'.*alpha, beta"):
        compute_ratings(b, anchor="gpt")
    with pytest.raises(PlaygroundError, match="bootstrap must be"):
        compute_ratings(b, bootstrap=-1)


def test_batched_newton_equals_one_fit_per_data_set() -> None:
    counts = aggregate(indexed(simulate(TRUE, 600, seed=11)))
    rng = np.random.default_rng(2)
    n = rng.integers(0, 30, (5, len(counts.i))).astype(float)
    w = np.floor(rng.random(n.shape) * (2 * n + 1)) / 2  # 0, ½, …, n points
    together = fit_log_strengths(counts.i, counts.j, n, w, 8)
    alone = np.vstack([fit_log_strengths(counts.i, counts.j, n[k : k + 1], w[k : k + 1], 8) for k in range(5)])
    np.testing.assert_allclose(together, alone, atol=1e-10)
    warm = fit_log_strengths(counts.i, counts.j, n, w, 8, start=together[0] + 0.5)  # the bootstrap's warm start
    np.testing.assert_allclose(warm, together, atol=1e-10)
    # At the optimum the gradient vanishes: Σ_j (w_ij − n_ij p_ij) = λ θ_i for every model.
    p = 1 / (1 + np.exp(together[:, counts.j] - together[:, counts.i]))
    resid = w - n * p
    grad = np.zeros((5, 8))
    np.add.at(grad, (slice(None), counts.i), resid)
    np.add.at(grad, (slice(None), counts.j), -resid)
    np.testing.assert_allclose(grad, 1e-3 * together, atol=1e-8)


def test_a_model_that_never_loses_gets_a_finite_top_rating() -> None:
    rows = battles(("champ", "sft", "model_a", 12), ("x", "champ", "model_b", 9),
                   ("sft", "x", "model_a", 10), ("sft", "x", "model_b", 7), ("x", "sft", "tie", 5))
    result = compute_ratings(indexed(rows), bootstrap=300)
    board = result.leaderboard
    assert board.index[0] == "champ" and board.loc["champ", "losses"] == board.loc["champ", "ties"] == 0
    top = board.loc["champ"]
    assert np.isfinite(top[["rating", "ci_low", "ci_high"]].astype(float)).all()
    assert 1300 < top["rating"] < 3500 and top["ci_high"] >= top["rating"] > board.loc["x", "rating"]
    assert len(result.warnings) == 1 and "never lost: champ" in result.warnings[0]
    json.dumps(to_json(result), allow_nan=False)


def test_all_ties_give_everyone_the_anchor_rating() -> None:
    rows = battles(("sft", "a", "tie", 3), ("a", "b", "tie (bothbad)", 4), ("b", "sft", "tie", 2))
    board = compute_ratings(indexed(rows), bootstrap=100).leaderboard
    np.testing.assert_allclose(board["rating"], 1000.0, atol=1e-9)
    np.testing.assert_allclose(board[["ci_low", "ci_high"]].to_numpy(), 1000.0, atol=1e-9)
    assert list(board["rank"]) == [1, 1, 1] and list(board.index) == ["a", "b", "sft"]


def test_disconnected_groups_stay_finite_with_a_warning() -> None:
    rows = battles(("a", "b", "model_a", 6), ("a", "b", "model_b", 2), ("c", "d", "model_a", 3), ("c", "d", "tie", 3))
    result = compute_ratings(indexed(rows), bootstrap=50, anchor="a")
    assert np.isfinite(result.leaderboard["rating"]).all()
    assert "2 groups that never met (a, b; c, d)" in result.warnings[0]
    assert math.isnan(result.win_fraction.loc["a", "c"])
    assert to_json(result)["matrices"]["win_fraction"]["a"]["c"] is None


def test_online_elo() -> None:
    b = indexed(battles(("a", "b", "model_a", 1)))
    assert online_elo(b) == {"a": 1002.0, "b": 998.0}  # E = ½, k = 4
    rows = battles(("top", "x", "model_a", 20), ("y", "top", "model_b", 20), ("x", "y", "tie", 10))
    elo = online_elo(indexed(rows), k=16)
    assert elo["top"] > 1000 + 100 and elo["x"] < 1000 and elo["y"] < 1000
    assert sum(elo.values()) == pytest.approx(3000)  # every update is zero-sum


# ----------------------------------------------------------------------------- intervals with rankings


def widths(rows: list[dict[str, Any]], seed: int = 2) -> pd.Series:
    """Each non-anchor model's 95% interval width (Elo), by model name."""
    board = compute_ratings(indexed(rows), bootstrap=1000, seed=seed).leaderboard
    return (board["ci_high"] - board["ci_low"]).drop("sft").sort_index()


def without_vote_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "vote_id"} for row in rows]


def test_pair_votes_resample_exactly_like_battles(simulated_rows: list[dict[str, str]]) -> None:
    # One battle per vote: the vote patterns are the cells, so the draws, and the intervals, are the same.
    voted = [{**row, "vote_id": 1000 + n} for n, row in enumerate(simulated_rows)]
    by_vote, by_battle = (compute_ratings(indexed(rows), bootstrap=300, seed=5)
                          for rows in (voted, simulated_rows))
    assert (by_vote.n_votes, by_battle.n_votes, by_vote.n_battles) == (4000, 4000, 4000)
    for column in ("rating", "ci_low", "ci_high"):
        assert np.array_equal(by_vote.leaderboard[column], by_battle.leaderboard[column])


def test_a_vote_of_duplicated_battles_resamples_as_one(simulated_rows: list[dict[str, str]]) -> None:
    # Every vote is one battle cast three times (the most correlated "ranking" there is). Resampling
    # votes sees 1500 independent outcomes, as the single battles do; resampling battles sees 4500
    # and gives intervals ≈ √3 too narrow.
    single = simulated_rows[:1500]
    tripled = [{**row, "vote_id": n} for n, row in enumerate(single) for _ in range(3)]
    by_vote, by_battle, truth = widths(tripled), widths(without_vote_ids(tripled)), widths(single)
    assert (by_vote - truth).abs().max() < 0.05  # the same draws; 3× the counts moves the ridge's pull only
    assert (by_vote / by_battle).between(1.5, 2.0).all(), by_vote / by_battle


def test_rankings_with_correlated_pairs_widen_the_interval() -> None:
    # 150 rankings of four: "a" is best (60%) or worst, the rest in random order. A vote's three
    # battles of "a" move together, so they are one draw, not three: a's interval widens.
    rng = np.random.default_rng(0)
    rows = []
    for vote in range(150):
        rest = [str(m) for m in rng.permutation(["b", "sft", "c"])]
        order = ["a", *rest] if rng.random() < 0.6 else [*rest, "a"]
        for x, y in itertools.combinations([str(m) for m in rng.permutation(order)], 2):
            rows.append({"model_a": x, "model_b": y, "vote_id": vote,
                         "winner": "model_a" if order.index(x) < order.index(y) else "model_b"})
    by_vote, by_battle = widths(rows), widths(without_vote_ids(rows))
    assert by_vote["a"] > 1.35 * by_battle["a"], (by_vote, by_battle)
    assert compute_ratings(indexed(rows), bootstrap=0).n_votes == 150


def test_votes_are_told_apart_by_source_and_do_not_depend_on_order(simulated_rows: list[dict[str, str]]) -> None:
    rows = [{**row, "vote_id": n // 3, "source": "human" if n % 2 else "other.jsonl"}
            for n, row in enumerate(simulated_rows[:600])]
    assert indexed(rows).n_votes == 200 + 200  # 3 rows per vote id, split between two sources
    # Patterns are ordered by content: shuffled rows and renumbered votes draw the same rounds.
    shuffled = [{**rows[k], "vote_id": f"v{rows[k]['vote_id']}"} for k in np.random.default_rng(1).permutation(600)]
    assert np.array_equal(widths(rows), widths(shuffled))
    with pytest.raises(PlaygroundError, match="row 1: vote_id must be an integer or a string"):
        parse_battles([{"model_a": "a", "model_b": "b", "winner": "tie", "vote_id": 1.5}])


def test_win_rate_counts_the_votes_behind_its_battles() -> None:
    # Vote 7 ranked two responses that are both rated as ckpt: two ckpt-vs-sft battles from one look.
    rows = [{"model_a": "ckpt", "model_b": "sft", "winner": "model_a", "vote_id": 7},
            {"model_a": "sft", "model_b": "ckpt", "winner": "model_b", "vote_id": 7},
            {"model_a": "ckpt", "model_b": "sft", "winner": "tie", "vote_id": 8},
            {"model_a": "sft", "model_b": "ckpt", "winner": "tie (bothbad)"}]
    r = win_rate(parse_battles(rows), "ckpt", "sft")
    assert (r.n, r.wins, r.ties, r.losses, r.rate, r.n_votes) == (4, 2, 2, 0, 0.75, 3)
    assert r.note == "4 pairs from 3 votes: pairs from rankings are not independent; interval too narrow"
    clean = win_rate(parse_battles(rows[1:]), "ckpt", "sft")
    assert (clean.n, clean.n_votes, clean.note) == (3, 3, None)


def test_win_score_is_the_one_tie_rule() -> None:
    assert [win_score(w) for w in ARENA_WINNERS] == [1.0, 0.0, 0.5, 0.5]
    with pytest.raises(PlaygroundError, match="'A' is not one of model_a, model_b, tie, tie \\(bothbad\\)"):
        win_score("A")


def test_one_model_or_no_battles_is_an_error() -> None:
    one = IndexedBattles(("sft",), np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([]))
    with pytest.raises(PlaygroundError, match="at least 2 models"):
        compute_ratings(one)
    with pytest.raises(PlaygroundError, match="no battles"):
        index_battles([])


def write_battles(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_read_battles_formats(tmp_path: Path, suffix: str) -> None:
    rows = battles(("a", "b", "model_a", 2), ("b", "c", "tie (bothbad)", 1))
    assert read_battles(write_battles(tmp_path / f"battles{suffix}", rows)) == parse_battles(rows)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_read_battles_keeps_the_vote_id(tmp_path: Path, suffix: str) -> None:
    rows = [{"model_a": "a", "model_b": "b", "winner": "tie", "vote_id": 4, "tstamp": 1.0},
            {"model_a": "a", "model_b": "c", "winner": "tie", "vote_id": 4, "tstamp": 1.0},
            {"model_a": "b", "model_b": "c", "winner": "tie", "vote_id": None, "tstamp": 2.0}]
    read = read_battles(write_battles(tmp_path / f"battles{suffix}", rows))
    vote_id = "4" if suffix == ".csv" else 4  # a CSV cell is text; the empty one is no vote id
    assert [r.vote_id for r in read] == [vote_id, vote_id, None] and read[0].tstamp == 1.0  # for daily caps
    assert index_battles(read).n_votes == 2


@pytest.mark.parametrize(("lines", "message"), [
    (['{"model_a": "a", "model_b": "b", "winner": "model_a"}', '{"model_a": "a", "model_b": "b", "winner": "A"}'],
     r"line 2: winner is 'A'; expected one of 'model_a', 'model_b', 'tie', 'tie \(bothbad\)'"),
    (['{"model_a": "a", "winner": "tie"}'], "line 1: missing model_b"),
    (['', '{"model_a": "a", "model_b": "a", "winner": "tie"}'], "line 2: model_a and model_b are both 'a'"),
    (['{"model_a": 3, "model_b": "b", "winner": "tie"}'], "line 1: model_a must be a non-empty string"),
    (['{"model_a": "a", "model_b": "b", "winner": "tie"', ], "line 1: not valid JSON"),
    ([], "no battles"),
])
def test_read_battles_errors_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "battles.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(PlaygroundError, match=message):
        read_battles(path)


def test_cli_writes_json_and_prints_the_leaderboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = battles(("sft", "policy", "model_b", 14), ("sft", "policy", "model_a", 6), ("reference", "sft", "tie", 8),
                   ("policy", "reference", "model_a", 5), ("reference", "policy", "tie (bothbad)", 2))
    src = write_battles(tmp_path / "battles.jsonl", rows)
    out = tmp_path / "ratings.json"
    assert main(["--battles", str(src), "--out", str(out), "--bootstrap", "200", "--seed", "4"]) == 0
    data = json.loads(out.read_text())
    assert set(data) == {"anchor", "bootstrap", "seed", "ridge", "n_battles", "n_votes", "warnings", "models",
                         "matrices", "style_control"}
    assert data["style_control"] is False
    assert (data["anchor"], data["bootstrap"], data["seed"], data["n_battles"]) == ("sft", 200, 4, 35)
    assert data["n_votes"] == 35  # no vote_id: every battle is a vote of its own
    assert list(data["models"]) == ["policy", "sft", "reference"]
    policy = data["models"]["policy"]
    assert (policy["wins"], policy["losses"], policy["ties"], policy["n_battles"], policy["rank"]) == (19, 6, 2, 27, 1)
    assert policy["ci_low"] < policy["rating"] < policy["ci_high"]
    assert data["models"]["sft"]["rating"] == 1000.0
    assert data["matrices"]["battles"]["sft"]["policy"] == 20
    assert data["matrices"]["win_fraction"]["policy"]["sft"] == pytest.approx(14 / 20)
    assert data["matrices"]["win_fraction"]["sft"]["sft"] is None
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split()[:2] == ["rank", "model"] and printed[2].split()[:2] == ["1", "policy"]
    assert "19/6/2" in printed[2] and "[" in printed[2]

    assert main(["--battles", str(src), "--out", str(out), "--bootstrap", "0"]) == 0
    assert json.loads(out.read_text())["models"]["policy"]["ci_low"] is None
    assert sorted(tmp_path.iterdir()) == sorted([src, out])  # no temporary file left behind


@pytest.mark.slow  # a subprocess CLI
def test_cli_bad_input_exits_1_with_one_error_line(tmp_path: Path) -> None:
    src = tmp_path / "battles.jsonl"
    src.write_text('{"model_a": "a", "model_b": "b", "winner": "model_a"}\n{"model_a": "a", "model_b": "b"}\n')
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-m", "cli", "ratings", "--battles", str(src), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {src}: line 2: missing winner; a battle needs model_a, model_b, winner"
    assert not out.exists()
    with pytest.raises(PlaygroundError, match="--bootstrap must be ≥ 0"):
        main(["--battles", str(src), "--out", str(out), "--bootstrap", "-5"])


# ------------------------------------------------------------------------------------ style control

STYLED_TRUTH = {"sft": 1000.0, "verbose": 1000.0, "terse": 1060.0, "plain": 970.0}
PLANTED_BETA = np.array([0.5, 0.0, 0.15, 0.3])  # log-odds per typical difference: tokens, headers, lists, bold


def simulate_styled(n: int, seed: int) -> list[dict[str, Any]]:
    """Arena rows with conv_metadata where 'verbose' writes long, bold, listy answers and the
    outcome follows P(a wins) = σ((R_a − R_b)/ELO_PER_LOGIT + x·PLANTED_BETA), x = style_features."""
    rng = np.random.default_rng(seed)
    names = list(STYLED_TRUTH)
    tokens = {"sft": 250, "verbose": 700, "terse": 120, "plain": 260}
    bold = {"sft": 0.5, "verbose": 4.0, "terse": 0.2, "plain": 0.7}
    rows: list[dict[str, Any]] = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        meta: dict[str, Any] = {}
        for side, k in (("a", a), ("b", b)):
            name = names[k]
            # lengths vary widely within a model too, or length and model could not be told apart
            meta[f"sum_assistant_{side}_tokens"] = int(rng.lognormal(np.log(tokens[name]), 0.8))
            meta[f"header_count_{side}"] = {"h1": int(rng.poisson(1.0)), "h2": int(rng.poisson(0.5))}
            meta[f"list_count_{side}"] = {"ordered": int(rng.poisson(2.0 if name == "verbose" else 0.8)),
                                          "unordered": int(rng.poisson(1.0))}
            meta[f"bold_count_{side}"] = {"**": int(rng.poisson(bold[name])), "__": 0}
        rows.append({"model_a": names[a], "model_b": names[b], "winner": "tie", "conv_metadata": meta})  # drawn below
    x = style_features(parse_battles(rows))
    logit = np.array([(STYLED_TRUTH[r["model_a"]] - STYLED_TRUTH[r["model_b"]]) / ELO_PER_LOGIT for r in rows])
    wins = rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + x @ PLANTED_BETA)))
    for row, won in zip(rows, wins, strict=True):
        row["winner"] = "model_a" if won else "model_b"
    return rows


def test_style_control_recovers_planted_ratings_that_plain_ratings_miss() -> None:
    rows = simulate_styled(20_000, seed=3)
    battles = indexed(rows)
    styled = compute_ratings(battles, bootstrap=200, seed=1, style=style_features(parse_battles(rows)))
    plain = compute_ratings(battles, bootstrap=0)
    err = {m: styled.leaderboard.loc[m, "rating"] - STYLED_TRUTH[m] for m in STYLED_TRUTH}
    assert max(abs(e) for e in err.values()) < 15.0, err  # within 15 Elo of the planted ratings
    # the plain fit credits verbose for its style: well over 100 Elo too high, above terse
    assert plain.leaderboard.loc["verbose", "rating"] - STYLED_TRUTH["verbose"] > 100.0
    assert plain.leaderboard.loc["verbose", "rating"] > plain.leaderboard.loc["terse", "rating"]
    assert styled.leaderboard.index[0] == "terse" and plain.leaderboard.index[0] == "verbose"
    table = styled.style
    assert table is not None and list(table.index) == list(STYLE_FEATURES)
    np.testing.assert_allclose(table["coefficient"], PLANTED_BETA, atol=0.06)
    # the length coefficient's interval and the styled model's rating interval hold the planted values
    assert table.loc["tokens", "ci_low"] < PLANTED_BETA[0] < table.loc["tokens", "ci_high"]
    assert styled.leaderboard.loc["verbose", "ci_low"] < STYLED_TRUTH["verbose"] < styled.leaderboard.loc[
        "verbose", "ci_high"]
    np.testing.assert_allclose(table["elo"], table["coefficient"] * ELO_PER_LOGIT)
    data = to_json(styled)
    assert data["style_control"] is True
    assert data["style_coefficients"]["tokens"]["coefficient"] == pytest.approx(table.loc["tokens", "coefficient"])


def test_style_fit_without_style_is_the_plain_fit() -> None:
    rows = simulate(TRUE, 3000, seed=5)
    battles = indexed(rows)
    theta = fit_style_strengths(style_data(battles, np.zeros((len(battles), 4))))
    counts = aggregate(battles)
    plain = fit_log_strengths(counts.i, counts.j, counts.n[None, :].astype(float), counts.w[None, :], len(TRUE))
    np.testing.assert_allclose(theta[0, :-4], plain[0], atol=1e-9)
    assert np.all(theta[0, -4:] == 0.0)


def test_style_features_are_antisymmetric_ratios_scaled_to_unit_rms() -> None:
    rows = simulate_styled(500, seed=0)
    x = style_features(parse_battles(rows))
    np.testing.assert_allclose(np.sqrt(np.mean(x**2, axis=0)), 1.0)
    swapped = [{**r, "model_a": r["model_b"], "model_b": r["model_a"], "winner": FLIP[r["winner"]],
                "conv_metadata": {k[:-1] + {"a": "b", "b": "a"}[k[-1]] if k[-1] in "ab" else
                                  k.replace("_a_", "_b_") if "_a_" in k else k.replace("_b_", "_a_"): v
                                  for k, v in r["conv_metadata"].items()}} for r in rows]
    np.testing.assert_allclose(style_features(parse_battles(swapped)), -x)
    meta = rows[0]["conv_metadata"]
    tokens = meta["sum_assistant_a_tokens"], meta["sum_assistant_b_tokens"]
    raw = (tokens[0] - tokens[1]) / (tokens[0] + tokens[1] + 1)
    all_raw = np.array([(r["conv_metadata"]["sum_assistant_a_tokens"] - r["conv_metadata"]["sum_assistant_b_tokens"])
                        / (r["conv_metadata"]["sum_assistant_a_tokens"] + r["conv_metadata"]["sum_assistant_b_tokens"]
                           + 1) for r in rows])
    assert x[0, 0] == pytest.approx(raw / np.sqrt(np.mean(all_raw**2)))
    with pytest.raises(PlaygroundError, match="battle 2: no conv_metadata"):
        style_features(parse_battles([rows[0], {"model_a": "x", "model_b": "y", "winner": "tie"}]))


def test_style_bootstrap_round_is_the_weighted_refit() -> None:
    """Round 0 of the batched float32 bootstrap equals a float64 fit of its resample written out
    battle by battle (each battle as often as its vote was drawn)."""
    rows = simulate_styled(3000, seed=8)
    for n, row in enumerate(rows):
        row["vote_id"] = n // 3  # votes of three battles: a round keeps them together
    battles = indexed(rows)
    data = style_data(battles, style_features(parse_battles(rows)))
    start = fit_style_strengths(data)
    rounds = bootstrap_style(data, 2, seed=11, start=start)
    rng = np.random.default_rng(11)
    n_votes = int(data.vote.max()) + 1
    weight = np.bincount(rng.integers(0, n_votes, n_votes), minlength=n_votes)[data.vote]
    picked = np.repeat(np.arange(len(data.y)), weight)
    expanded = IndexedBattles(battles.models, np.repeat(data.i, data.sizes)[picked],
                              np.repeat(data.j, data.sizes)[picked], data.y[picked])
    refit = fit_style_strengths(style_data(expanded, data.x[picked]))
    np.testing.assert_allclose(rounds[0], refit[0], atol=2e-5)
    assert np.abs(rounds[0] - start[0]).max() > 1e-3  # a real resample, not the start returned


def test_cli_style_control_and_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = simulate_styled(600, seed=2)
    for n, row in enumerate(rows):
        row["category"] = "code" if n % 3 == 0 else "chat"
    src = tmp_path / "battles.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ratings.json"
    assert main(["--battles", str(src), "--out", str(out), "--bootstrap", "20", "--style-control",
                 "--category", "code"]) == 0
    data = json.loads(out.read_text())
    assert data["n_battles"] == 200 and data["style_control"] is True
    assert list(data["style_coefficients"]) == list(STYLE_FEATURES)
    assert "style coefficients" in capsys.readouterr().out
    with pytest.raises(PlaygroundError, match="no battles in category 'math'; the categories are chat, code"):
        main(["--battles", str(src), "--out", str(out), "--category", "math"])
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"model_a": "x", "model_b": "y", "winner": "tie"}) + "\n")
    with pytest.raises(PlaygroundError, match=r"bare\.jsonl: battle 1: no conv_metadata"):
        main(["--battles", str(bare), "--out", str(out), "--style-control"])


def test_store_battles_carry_category_and_style_counts(tmp_path: Path) -> None:
    from evals.battle import categories, in_category
    from evals.battles import human_battles, judge_battles
    from playground.data.prompt_sets import SetPrompt
    from playground.data.store import open_store
    from playground.data.style import conv_metadata
    from playground.data.votes import Response, Vote

    code = [{"role": "user", "content": "Write a loop."}]
    chat = [{"role": "user", "content": "Hi!"}]
    with open_store(tmp_path / "votes.db") as store:
        prompt_set = store.prompt_sets.add("s", "s.jsonl", [SetPrompt("1", code, "code"), SetPrompt("2", chat, None)])
        ids = [p.id for p in store.prompt_sets.prompts(prompt_set.id)]
        answers = [Response("sft", "**for** i in x"), Response("policy", "- a\n- b")]
        for item, prompt in zip(ids, (code, chat), strict=True):
            store.votes.add_queue_vote(Vote(prompt=prompt, responses=answers, outcome="a", voter="ana", item=item))
        store.votes.add(Vote(prompt=chat, responses=answers, outcome="b", voter="bo"))  # playground vote: no item
        store.judges.add("rule:shorter", "r1", [
            {"prompt": p, "model_a": "sft", "model_b": "policy", "text_a": "x", "text_b": "yy", "winner": "model_a"}
            for p in (code, chat)])
        rows = human_battles(store) + judge_battles(store, ["rule:shorter"])
    assert [r.category for r in rows] == ["code", None, None, "code", None]
    assert all(r.conv_metadata == conv_metadata("**for** i in x", "- a\n- b") for r in rows[:3])
    assert rows[3].conv_metadata == conv_metadata("x", "yy")
    assert categories(rows) == ["code"]
    assert [r.source for r in in_category(rows, "code")] == ["human", "rule:shorter"]
    with pytest.raises(PlaygroundError, match="no battles in category 'chat'; the categories are code"):
        in_category(rows, "chat")
