"""The Dashboard: report tables from the store, KL estimates, and the judge / reward-model / train
loop driven through the app's API."""

import json
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from gradio_client import Client, handle_file

from evals.battle import Battle
from evals.dashboard import HINT_WIDTH, JUDGE_COLUMNS, build_report, win_rate_display, write_tables, zip_tables
from evals.kl import estimate_kl, eval_prompts
from evals.winrate import win_rate_table
from playground.core.errors import PlaygroundError
from service.state import AppState
from tests.conftest import make_vote, running_app
from tests.test_models import perturbed_policy
from tests.test_train_tab import PAIRS, TRAIN

PROMPT = [{"role": "user", "content": "Hi?"}]


@pytest.fixture
def state(tiny_state: AppState) -> AppState:
    return tiny_state


def test_report_from_votes_and_judge_battles(state: AppState, tmp_path: Path) -> None:
    for outcome in ["a"] * 6 + ["b"] * 2 + ["tie"]:  # policy 6.5 of 9 against sft
        state.store.votes.add(make_vote(("policy", "sft"), outcome, texts=("short", "a longer answer"),
                                        rated_as=("policy", "sft"), prompt=PROMPT))
    state.store.judges.add("rule:shorter", "r1", [
        {"prompt": PROMPT, "model_a": "x", "model_b": "sft", "text_a": "1", "text_b": "22", "winner": "model_a"}])
    report = build_report(state.store, bootstrap=200)
    assert report.n_battles == 9 and list(report.leaderboard["model"]) == ["policy", "sft"]
    assert report.leaderboard.set_index("model").loc["sft", "rating"] == 1000.0
    # Two models: the MLE gap is 400·log10(6.5 / 2.5) (the tiny ridge moves it by well under a point).
    gap = report.leaderboard.set_index("model").loc["policy", "rating"] - 1000.0
    assert gap == pytest.approx(400 * __import__("math").log10(6.5 / 2.5), abs=1.0)
    [row] = report.win_rates.to_dict("records")
    assert (row["model"], row["n"], row["wins"], row["ties"]) == ("policy", 9, 6, 1)
    assert row["mean_len"] == 5 and row["baseline_mean_len"] == len("a longer answer")

    with_judge = build_report(state.store, judges=["rule:shorter"], bootstrap=0)
    assert set(with_judge.leaderboard["model"]) == {"policy", "sft", "x"}
    judge_only = build_report(state.store, human=False, judges=["rule:shorter"], bootstrap=0)
    assert judge_only.n_battles == 1

    files = write_tables(report, tmp_path / "tables")
    with zipfile.ZipFile(zip_tables(files, tmp_path / "tables.zip")) as z:
        assert sorted(z.namelist()) == sorted(p.name for p in files)
    names = {p.name for p in files}
    assert {"leaderboard.csv", "leaderboard.json", "win_rates.csv", "win_fraction.csv", "ratings.json"} <= names
    assert list(pd.read_csv(tmp_path / "tables" / "leaderboard.csv")["model"]) == ["policy", "sft"]
    assert json.loads((tmp_path / "tables" / "ratings.json").read_text())["models"]["sft"]["rating"] == 1000.0

    empty = build_report(state.store, human=False)
    assert empty.ratings is None and "at least 2 models" in empty.message


def test_kl_is_zero_for_the_fresh_adapter_and_matches_the_exact_value(state: AppState) -> None:
    import torch

    from playground.inference.settings import prompt_ids

    prompts = eval_prompts()[:3]
    fresh = estimate_kl(state.scheduler, state.scorer, state.models.policy, prompts, samples=2, max_new_tokens=8)
    assert fresh.n == 6 and abs(fresh.mean) < 1e-4
    perturbed_policy(state.models, seed=3, scale=4.0)  # with a new identity: the scheduler samples its adapter
    # One-token responses: the exact KL is a sum over the vocabulary at the first position.
    ids = prompt_ids(state.models, PROMPT)
    with torch.inference_mode():
        logps = []
        for role in (state.models.policy, state.models.reference):
            with role.active() as model:
                logps.append(torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1))
    exact = float((logps[0].exp() * (logps[0] - logps[1])).sum())
    estimate = estimate_kl(state.scheduler, state.scorer, state.models.policy, [PROMPT], samples=2000,
                           max_new_tokens=1)
    assert estimate.n == 2000 and exact > 0
    assert abs(estimate.mean - exact) < 4 * estimate.stderr and estimate.stderr < exact / 2


@pytest.fixture
def app(state: AppState) -> Iterator[tuple[AppState, Client]]:
    from playground.data.rows import parse_row

    state.store.imports.add_pairs([parse_row(p, i + 1) for i, p in enumerate(PAIRS)], "pairs.jsonl")
    with running_app(state) as client:
        yield state, client


def test_train_judge_and_rate_through_the_api(app: tuple[AppState, Client]) -> None:
    state, client = app
    client.predict(*TRAIN, api_name="/train")  # a DPO checkpoint, now serving as policy
    [ckpt] = list(state.checkpoints)
    message, _ = client.predict(["policy", "sft"], "built-in eval prompts (eval-prompts.jsonl)", 8,
                                "longer wins", "", None, api_name="/run_judge")
    assert "16 battles judged by `rule:longer`" in message
    stored = state.store.judges.list("rule:longer")
    assert {b.model_a for b in stored} | {b.model_b for b in stored} == {ckpt, "sft"}  # policy rated as ckpt

    rm_message, rm_update, rm_table = client.predict(4, 1e-3, 0.0, api_name="/train_reward_model")
    assert [row[0] for row in rm_table["data"]] == [rm_update["value"]]
    rm_name = rm_update["value"]  # the dropdown's update: the new model, selected
    assert "Trained `rm-" in rm_message and (state.data_dir / "reward-models" / rm_name).is_dir()
    client.predict(["policy", "sft"], "built-in eval prompts (eval-prompts.jsonl)", 8, "reward model", "", rm_name,
                   api_name="/run_judge")
    rm_battles = state.store.judges.list(f"reward-model:{rm_name}")
    assert len(rm_battles) == 16 and all({"reward_a", "reward_b", "p_a"} <= set(b.details["ab"]) for b in rm_battles)

    arena = state.data_dir / "arena.jsonl"  # an Arena battle file joins the votes and judge battles
    arena.write_text('{"model_a": "gpt-x", "model_b": "sft", "winner": "model_a"}\n' * 3)
    out = client.predict(True, ["rule:longer"], "sft", "sft", 100, handle_file(str(arena)), api_name="/dashboard")
    summary, leaderboard = out[0], out[1]
    assert "19 battles among 3 models" in summary
    assert sorted(row[1] for row in leaderboard["data"]) == sorted([ckpt, "sft", "gpt-x"])
    out = client.predict(True, ["rule:longer"], "sft", "sft", 100, None, api_name="/dashboard")
    summary, leaderboard = out[0], out[1]
    assert "16 battles among 2 models" in summary
    assert sorted(row[1] for row in leaderboard["data"]) == sorted([ckpt, "sft"])
    records = out[3]
    assert [row[0] for row in records["data"]] == [ckpt]
    # both judges are order-free: every pair judged alike in both orders
    judges = next(o for o in out if isinstance(o, dict) and o.get("headers") == JUDGE_COLUMNS)
    by_judge = {row[0]: dict(zip(judges["headers"], row, strict=True)) for row in judges["data"]}
    assert set(by_judge) == {"rule:longer", f"reward-model:{rm_name}"}
    assert all(r["position consistency"] == 1.0 and r["battles"] == 16 for r in by_judge.values())
    assert by_judge["rule:longer"]["pairs with human votes"] == 0  # no human votes on these prompts

    kl_message = client.predict(api_name="/estimate_kl")  # then the table carries the estimate
    estimate = state.kl_estimates[ckpt]
    assert f"`{ckpt}`: KL ≈ {estimate.mean:.3f}" in kl_message and 0 < estimate.n <= 32  # 16 prompts × 2
    [row] = client.predict(True, [], "sft", "sft", 0, None, api_name="/dashboard")[3]["data"]
    assert row[records["headers"].index("KL to ref")] == round(estimate.mean, 3)
    assert row[records["headers"].index("RM reward")] is None  # no reward model asked for

    # With a reward model, the same samples are scored: mean reward per checkpoint, and SFT's at KL 0.
    scored = client.predict(rm_name, api_name="/estimate_kl")
    assert scored.count("mean reward") == 2 and scored.startswith("`sft`")
    sft, trained = state.kl_estimates["sft"], state.kl_estimates[ckpt]
    assert sft.reward_model == trained.reward_model == rm_name and math.isfinite(trained.reward_mean)
    out = client.predict(True, [], "sft", "sft", 0, None, api_name="/dashboard")
    [row] = out[3]["data"]
    assert row[out[3]["headers"].index("RM reward")] == round(trained.reward_mean, 3)
    with pytest.raises(Exception, match="no reward model 'rm-none'"):
        client.predict("rm-none", api_name="/estimate_kl")


def test_the_win_rate_table_shows_the_votes_behind_its_pairs() -> None:
    """Three battles against the baseline from one ranking vote and one pair vote: four pairs, two votes,
    and the table says the Wilson interval is too narrow."""
    def row(vote_id: int, winner: str) -> Battle:
        return Battle("dpo-1", "sft", winner, vote_id=vote_id, source="human", len_a=10, len_b=20)

    shown = win_rate_display(win_rate_table([row(1, "model_a")] * 3 + [row(2, "model_b")], "sft"))
    [line] = shown.to_dict("records")
    assert (line["model"], line["n"], line["votes"], line["W/L/T"]) == ("dpo-1", 4, 2, "3/1/0")
    assert "not independent" in line["note"] and "too narrow" in line["note"]
    single = win_rate_display(win_rate_table([row(1, "model_a"), row(2, "model_b")], "sft"))
    assert single["votes"].tolist() == [2] and single["note"].tolist() == [""]
    assert single["LC win rate"].tolist() == [None] and single["LC 95% CI"].tolist() == ["—"]  # not computed


def test_the_dashboard_shows_length_controlled_win_rates_and_style_controlled_ratings(store) -> None:
    """Two equally good models where the longer answer wins more often: the raw win rate is far from ½,
    the length-controlled one is not; style control reports the length coefficient, and the category
    filter keeps one category's battles."""
    import random

    from tests.conftest import make_vote

    rng = random.Random(0)
    for _ in range(400):
        verbose_is_a = rng.random() < 0.5
        long, short = "word " * 40, "word " * 5
        verbose_longer = rng.random() < 0.8  # "verbose" usually writes more…
        a_text, b_text = (long, short) if verbose_is_a == verbose_longer else (short, long)
        a_wins = rng.random() < (0.7 if len(a_text) > len(b_text) else 0.3)  # …and length alone wins
        models = ("verbose", "sft") if verbose_is_a else ("sft", "verbose")
        store.votes.add(make_vote(models, "a" if a_wins else "b", texts=[a_text, b_text]))
    report = build_report(store, baseline="sft", bootstrap=200)
    [line] = win_rate_display(report.win_rates).to_dict("records")
    low, high = (float(x) for x in line["LC 95% CI"].split(" – "))
    assert line["win rate"] > 0.55 and low <= 0.5 <= high  # raw: length bias; LC: no better than sft
    joint_low, joint_high = (float(x) for x in line["joint LC 95% CI"].split(" – "))
    assert joint_low <= 0.5 <= joint_high and abs(line["joint LC win rate"] - line["LC win rate"]) < 0.05
    assert "in every battle" not in line["note"]  # verbose is shorter in a fifth of the battles
    assert report.style.empty  # no style control asked for
    styled = build_report(store, baseline="sft", bootstrap=50, style_control=True)
    coefficients = dict(zip(styled.style["style feature"], styled.style["coefficient (log-odds)"], strict=True))
    assert coefficients[next(iter(coefficients))] > 0.3  # the first feature, answer length, carries the effect
    assert "style-controlled" in styled.message
    assert abs(styled.ratings.leaderboard.loc["verbose", "rating"] - 1000) < 40  # equal at equal style
    assert report.ratings.leaderboard.loc["verbose", "rating"] > 1030  # and ahead without style control
    with pytest.raises(PlaygroundError, match="no battle has a category"):
        build_report(store, category="math")


def test_the_judge_table_compares_a_judge_with_the_human_majority(store) -> None:
    """Two prompts voted on by people and judged: the judge agrees on one, disagrees on the other
    (κ = 0 at that split), and one of its four orders disagreed with the other (consistency 1/2)."""
    from evals.battles import human_battles
    from evals.dashboard import judge_table
    from tests.conftest import make_vote

    prompts = [[{"role": "user", "content": f"Q{i}?"}] for i in range(2)]
    for prompt in prompts:
        store.votes.add(make_vote(("sft", "policy"), "a", prompt=prompt))
    battle = {"model_a": "sft", "model_b": "policy", "text_a": "x", "text_b": "y"}
    store.judges.add("rule:longer", "run-1", [
        {**battle, "prompt": prompts[0], "winner": "model_a",
         "details": {"ab": {"winner": "model_a"}, "ba": {"winner": "model_b"}}},  # sft both times
        {**battle, "prompt": prompts[1], "winner": "tie",  # the first slot both times: the orders disagree
         "details": {"ab": {"winner": "model_a"}, "ba": {"winner": "model_a"}}},
    ])
    [row] = judge_table(store, human_battles(store)).to_dict("records")
    assert row["judge"] == "rule:longer" and row["battles"] == 2
    assert row["position consistency"] == 0.5
    assert row["pairs with human votes"] == 2 and row["agreement with humans"] == 0.5


def test_an_llm_judge_runs_from_the_dashboard(app: tuple[AppState, Client], tiny_model_dir: Path,
                                              tmp_path: Path) -> None:
    import json
    import shutil

    state, client = app
    client.predict(*TRAIN, api_name="/train")  # a policy with weights of its own to compare with the SFT model
    judge_dir = shutil.copytree(tiny_model_dir, tmp_path / "tiny-judge")  # with room for the judge's template
    config = json.loads((judge_dir / "config.json").read_text())
    (judge_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    message, _ = client.predict(["policy", "sft"], "built-in eval prompts (eval-prompts.jsonl)", 8,
                                "LLM judge (a local model)", "", None, str(judge_dir), api_name="/run_judge")
    name = "llm:tiny-judge"
    assert f"16 battles judged by `{name}` in both orders" in message
    battles = state.store.judges.list(name)
    for b in battles:  # each order's constrained probabilities of "A", "B", "tie"
        for order in ("ab", "ba"):
            assert sum(b.details[order][k] for k in ("p_a", "p_b", "p_tie")) == pytest.approx(1, abs=1e-5)
    with pytest.raises(Exception, match=r"judge\.gguf: no such file or folder"):
        client.predict(["policy", "sft"], "built-in eval prompts (eval-prompts.jsonl)", 8,
                       "LLM judge (a local model)", "", None, "/nowhere/judge.gguf", api_name="/run_judge")
    assert state.store.judges.counts_by_judge() == {name: 16}


def test_the_reward_vs_kl_figure_groups_checkpoints_by_how_they_trained() -> None:
    from evals.dashboard import CHECKPOINT_COLUMNS, reward_model_kl_figure
    from evals.kl import KLEstimate

    def record(name: str, loss: str, kl: float, reward: float) -> dict:
        return {**dict.fromkeys(CHECKPOINT_COLUMNS), "checkpoint": name, "loss": loss, "KL to ref": kl,
                "KL stderr": 0.1, "RM reward": reward, "RM reward stderr": 0.05}

    records = pd.DataFrame([record("dpo-1", "sigmoid", 0.5, 0.2), record("rl-1", "rloo", 1.5, 0.9),
                            record("dpo-2", "sigmoid", 1.0, 0.4)], columns=CHECKPOINT_COLUMNS)
    fig = reward_model_kl_figure(records, {"sft": KLEstimate(0.0, 0.0, 32, 48, -0.1, 0.02, "rm-1")})
    assert [(t.name, list(t.x), list(t.y)) for t in fig.data] == [
        ("rloo", [1.5], [0.9]), ("sigmoid", [0.5, 1.0], [0.2, 0.4]), ("sft", [0.0], [-0.1])]
    assert "rm-1" in fig.layout.title.text
    empty = reward_model_kl_figure(records.assign(**{"RM reward": None}), {})
    assert "pick a reward model" in empty.layout.annotations[0].text.replace("<br>", " ")
    assert max(len(line) for line in empty.layout.annotations[0].text.split("<br>")) <= HINT_WIDTH


def test_building_the_page_draws_no_stray_component(tiny_state) -> None:
    """Every picker, box and table of the page has a label or an id: reading a view's outputs while
    the page is built once drew unlabelled copies of the Dashboard's pickers at its foot."""
    from ui.app import build_demo

    demo = build_demo(tiny_state)
    pickers = [c for c in demo.config["components"] if c["type"] in ("dropdown", "checkboxgroup", "dataframe")]
    assert pickers and [c["props"].get("label") for c in pickers if not c["props"].get("label")
                        and not c["props"].get("elem_id") and not c["props"].get("headers")] == []
