"""Length-controlled win rates (AlpacaEval 2's method) and the win-rate CLI (evals.winrate)."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cli.winrate import main
from evals.battle import parse_battles
from evals.winrate import fit_length_model, length_controlled_table, length_controlled_win_rate
from playground.core.errors import PlaygroundError

EXTRA = 0.15  # the longer answer wins with probability ½ + EXTRA, whoever wrote it


def simulate_length_bias(n: int, seed: int, longer_share: float = 0.8) -> list[dict[str, Any]]:
    """'policy' and 'sft' equally good; policy's answer is the longer one in `longer_share` of the
    battles (300 characters apart, give or take 20), and the longer answer wins with ½ + EXTRA."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        policy_longer = rng.random() < longer_share
        base = int(rng.integers(200, 600))
        gap = 300 + int(rng.integers(-20, 21))
        policy, sft = (base + gap, base) if policy_longer else (base, base + gap)
        longer_wins = rng.random() < 0.5 + EXTRA
        policy_wins = longer_wins == policy_longer
        if k % 2:  # either side
            rows.append({"model_a": "policy", "model_b": "sft", "winner": "model_a" if policy_wins else "model_b",
                         "len_a": policy, "len_b": sft, "vote_id": k})
        else:
            rows.append({"model_a": "sft", "model_b": "policy", "winner": "model_b" if policy_wins else "model_a",
                         "len_a": sft, "len_b": policy, "vote_id": k})
    return rows


def test_length_controlled_rate_sees_through_a_length_bias_the_raw_rate_does_not() -> None:
    rows = parse_battles(simulate_length_bias(3000, seed=0))
    lc = length_controlled_win_rate(rows, "policy", "sft", bootstrap=500, seed=1)
    assert lc is not None and (lc.n, lc.n_votes) == (3000, 3000)
    # raw: ½ + EXTRA (0.8 − 0.2) = 0.59 expected; its Wilson interval is far from ½
    table = length_controlled_table(rows, "sft", bootstrap=500, seed=1)
    raw = table.iloc[0]
    assert raw["model"] == "policy" and raw["win_rate"] == pytest.approx(lc.win_rate)
    assert 0.56 < lc.win_rate < 0.62 and raw["ci_low"] > 0.5
    # LC: within its interval of ½, and close to it
    assert lc.lc_ci_low is not None and lc.lc_ci_high is not None
    assert lc.lc_ci_low < 0.5 < lc.lc_ci_high
    assert abs(lc.lc_win_rate - 0.5) < 0.03 and lc.lc_ci_high - lc.lc_ci_low < 0.08
    # φ tanh(Δ/s) with |Δ|/s ≈ 1.2 here: φ ≈ logit(0.65) / tanh(1.2) ≈ 0.74
    assert lc.length_coefficient == pytest.approx(np.log(0.65 / 0.35) / np.tanh(300 / lc.length_scale), abs=0.12)
    assert table.loc[0, "lc_win_rate"] == pytest.approx(lc.lc_win_rate)


def test_without_a_length_difference_lc_equals_the_raw_rate() -> None:
    rows = parse_battles({"model_a": "policy", "model_b": "sft", "winner": w, "len_a": 100, "len_b": 100}
                         for w in ["model_a"] * 30 + ["model_b"] * 10 + ["tie"] * 10)
    lc = length_controlled_win_rate(rows, "policy", "sft", bootstrap=0)
    assert lc is not None and lc.win_rate == pytest.approx(0.7)
    assert lc.lc_win_rate == pytest.approx(0.7, abs=1e-4)  # only the ridge separates them
    assert lc.length_coefficient == 0.0 and lc.lc_ci_low is None
    assert length_controlled_win_rate(rows, "other", "sft") is None


def test_fit_length_model_is_the_maximum_of_its_likelihood() -> None:
    rng = np.random.default_rng(3)
    u = np.tanh(rng.normal(size=400))
    y = (rng.random(400) < 1 / (1 + np.exp(-(0.3 + 0.8 * u)))).astype(float)
    weights = np.stack([np.ones(400), rng.integers(0, 3, 400).astype(float)])
    fitted = fit_length_model(u, y, weights)

    def loglik(params: np.ndarray, w: np.ndarray) -> float:
        eta = params[0] + params[1] * u
        return float(np.sum(w * (y * -np.logaddexp(0, -eta) + (1 - y) * -np.logaddexp(0, eta)))
                     - 0.5e-3 * params @ params)

    for row, w in zip(fitted, weights, strict=True):  # every small move lowers the objective
        for d in ([1e-3, 0], [-1e-3, 0], [0, 1e-3], [0, -1e-3]):
            assert loglik(row + np.array(d), w) < loglik(row, w)
    assert fitted[0] == pytest.approx([0.3, 0.8], abs=0.3)


def test_rankings_are_resampled_as_whole_votes_and_lengths_are_required() -> None:
    rows = simulate_length_bias(600, seed=4)
    for k, row in enumerate(rows):
        row["vote_id"] = k // 3
    lc = length_controlled_win_rate(parse_battles(rows), "policy", "sft", bootstrap=50)
    assert lc is not None and (lc.n, lc.n_votes) == (600, 200)
    with pytest.raises(PlaygroundError, match=r"battle 2 \(policy vs sft\): no answer lengths"):
        length_controlled_win_rate(parse_battles([rows[1], {"model_a": "policy", "model_b": "sft", "winner": "tie"}]),
                                   "policy", "sft")


def test_cli_writes_raw_and_lc_win_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = simulate_length_bias(400, seed=2)
    for k, row in enumerate(rows):  # Arena rows: token counts in conv_metadata, no len_a/len_b
        meta = {}
        for side in "ab":
            meta[f"sum_assistant_{side}_tokens"] = row.pop(f"len_{side}")
            meta |= {f"header_count_{side}": {}, f"list_count_{side}": {}, f"bold_count_{side}": {}}
        row["conv_metadata"] = meta
        row["category"] = "chat" if k % 4 else "code"
    rows.append({"model_a": "other", "model_b": "sft", "winner": "model_a", "category": "chat",
                 "conv_metadata": rows[0]["conv_metadata"]})
    src, out = tmp_path / "battles.jsonl", tmp_path / "lc.json"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--battles", str(src), "--baseline", "sft", "--length-controlled", "--bootstrap", "100",
                 "--category", "chat", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["baseline"] == "sft" and data["category"] == "chat" and set(data["models"]) == {"policy", "other"}
    policy = data["models"]["policy"]
    assert policy["n"] == 300
    assert set(policy) >= {"win_rate", "lc_win_rate", "lc_ci_low", "lc_ci_high", "n"}
    assert policy["lc_ci_low"] <= policy["lc_win_rate"] <= policy["lc_ci_high"]
    assert policy["win_rate"] > policy["lc_win_rate"]
    assert "policy: win rate" in capsys.readouterr().out
    assert main(["--battles", str(src), "--baseline", "sft", "--out", str(out)]) == 0
    plain = json.loads(out.read_text())
    assert plain["length_controlled"] is False and plain["models"]["policy"]["n"] == 400
    assert "lc_win_rate" not in plain["models"]["policy"]
    with pytest.raises(PlaygroundError, match="unknown baseline 'gpt'"):
        main(["--battles", str(src), "--baseline", "gpt", "--out", str(out)])


def simulate_always_longer(seed: int, n: int = 1500) -> list[dict[str, Any]]:
    """Three models of equal skill: 'long' answers 218 ± 57 tokens more than 'sft' in every battle;
    'other' against both, its lengths varying on either side. Outcomes follow the joint model
    σ(φ · tanh(Δ/s)) with s the spread of Δ over all battles, φ = 2: longer answers win."""
    rng = np.random.default_rng(seed)
    pairs = [("long", "sft")] * n + [("other", "sft")] * n + [("other", "long")] * n
    delta = np.concatenate([rng.normal(218, 57, n), rng.normal(0, 150, n), rng.normal(-100, 200, n)])
    p_a = 1 / (1 + np.exp(-2.0 * np.tanh(delta / np.std(delta, ddof=1))))
    base = rng.integers(100, 400, len(delta))
    return [{"model_a": a, "model_b": b, "winner": "model_a" if rng.random() < p else "model_b",
             "len_a": float(base[k] + max(d, 0)), "len_b": float(base[k] + max(-d, 0)), "vote_id": k}
            for k, ((a, b), d, p) in enumerate(zip(pairs, delta, p_a, strict=True))]


def test_the_joint_lc_win_rate_holds_where_the_per_pair_fit_extrapolates_and_says_so() -> None:
    """An equal-skill model that is always much longer: its raw rate is far above ½, the per-pair LC
    fit has no battle near equal length (warned), and the joint fit, whose length coefficient the
    other pairs pin down, puts it within 0.05 of ½. The pair whose lengths vary gets no warning."""
    table = length_controlled_table(parse_battles(simulate_always_longer(seed=3)), "sft", bootstrap=200, seed=0)
    long, other = (table.set_index("model").loc[m] for m in ("long", "other"))
    assert long.win_rate > 0.7
    assert abs(long.joint_lc_win_rate - 0.5) < 0.05
    assert long.joint_lc_ci_low < 0.5 < long.joint_lc_ci_high
    assert "longer than the baseline's in every battle" in long.lc_warning
    assert pd.isna(other.lc_warning) and abs(other.joint_lc_win_rate - 0.5) < 0.05
    assert abs(other.lc_win_rate - other.joint_lc_win_rate) < 0.05  # where lengths vary, the two fits agree


def test_a_wide_lc_interval_is_flagged() -> None:
    rows = parse_battles(simulate_length_bias(40, seed=5))
    lc = length_controlled_win_rate(rows, "policy", "sft", bootstrap=300, seed=0)
    assert lc is not None and lc.lc_ci_high - lc.lc_ci_low > 0.3
    assert lc.lc_warning is not None and "is wider than 0.3" in lc.lc_warning


def test_cli_json_carries_the_joint_lc_win_rate_and_the_warning(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "battles.jsonl", tmp_path / "lc.json"
    src.write_text("".join(json.dumps(r) + "\n" for r in simulate_always_longer(seed=4, n=600)))
    assert main(["--battles", str(src), "--baseline", "sft", "--length-controlled", "--bootstrap", "100",
                 "--out", str(out)]) == 0
    models = json.loads(out.read_text())["models"]
    assert "in every battle" in models["long"]["lc_warning"] and models["other"]["lc_warning"] is None
    assert abs(models["long"]["joint_lc_win_rate"] - 0.5) < 0.07
    assert models["long"]["joint_lc_ci_low"] < models["long"]["joint_lc_win_rate"] < models["long"]["joint_lc_ci_high"]
    printed = capsys.readouterr().out
    assert "joint LC" in printed and "warning: the answers were longer" in printed
