"""What the Dashboard tab shows, computed from the store: tables (pandas) and figures (plotly).

Kept free of Gradio so a notebook or script gets the same numbers: `build_report(store, ...)`.
"""

import json
import math
import textwrap
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import plotly.graph_objects as go

from evals.agreement import judge_human_agreement
from evals.battle import Battle, categories, in_category, models_in
from evals.battles import human_battles, judge_battles
from evals.cleaning import RULES, CleaningConfig, CleaningReport, clean, kept
from evals.judge import position_consistency
from evals.kl import KLEstimate
from evals.ratings.bradley_terry import aggregate, fit_ratings
from evals.ratings.indexed import index_battles
from evals.ratings.results import RatingsResult, compute_ratings, to_json
from evals.ratings.style import style_features
from evals.winrate import (
    JOINT_LC_KEYS,
    checkpoint_timeline,
    length_controlled_table,
    win_rate_table,
    with_lengths,
)
from playground.core.atomic import write_file, write_json
from playground.data.store import Store
from playground.models.checkpoints import CheckpointRecord
from playground.training.dpo import loss_label
from playground.training.reward_model import RECORD as REWARD_RECORD

LAYOUT = {"margin": {"l": 40, "r": 10, "t": 40, "b": 40}, "height": 360}
NO_BATTLES = "No battles yet — generate on the Playground tab and vote, or run a judge below"
LEADERBOARD_COLUMNS = ["rank", "model", "rating", "95% CI", "battles", "W/L/T", "online Elo"]
WIN_RATE_COLUMNS = ["model", "vs", "win rate", "95% CI", "LC win rate", "LC 95% CI", "joint LC win rate",
                    "joint LC 95% CI", "n", "votes", "W/L/T", "mean length", "baseline mean length", "note"]
STYLE_COLUMNS = ["style feature", "coefficient (log-odds)", "95% CI", "Elo per typical difference"]
ALL_CATEGORIES = "all categories"
QUALITY_COLUMNS = ["rule", "flagged", "battles excluded", "evidence"]
COMPARE_COLUMNS = ["model", "rating, cleaned", "rating, all battles", "change"]
# The length-controlled win rates' columns: per pair, its warning, and the joint fit's (`evals.winrate`).
LC_KEYS = ["lc_win_rate", "lc_ci_low", "lc_ci_high", "lc_warning", *JOINT_LC_KEYS]
JUDGE_COLUMNS = ["judge", "battles", "position consistency", "consistency 95% CI", "pairs with human votes",
                 "agreement with humans", "agreement 95% CI", "Cohen's κ", "κ 95% CI"]
CHECKPOINT_COLUMNS = ["checkpoint", "parent", "created", "loss", "pairs", "steps", "β", "held-out pairs",
                      "held-out acc before", "held-out acc after", "held-out margin after", "KL to ref", "KL stderr",
                      "RM reward", "RM reward stderr"]


@dataclass(frozen=True)
class Report:
    n_battles: int
    ratings: RatingsResult | None  # None with fewer than 2 models
    leaderboard: pd.DataFrame
    win_rates: pd.DataFrame  # every model against the baseline
    timeline: pd.DataFrame  # each checkpoint's win rate against the baseline, oldest first
    checkpoints: pd.DataFrame  # training records: held-out accuracy and margin, KL where estimated
    judges: pd.DataFrame  # every stored judge: position consistency and agreement with the human votes
    message: str  # what is shown, or why nothing is
    style: pd.DataFrame  # style-controlled ratings' coefficients (STYLE_COLUMNS); empty without style control
    categories: list[str]  # the prompt categories of all the battles (the filter's choices)
    # Data quality (`evals.cleaning`): what each rule flagged (QUALITY_COLUMNS), and each model's rating
    # with and without the flagged battles (COMPARE_COLUMNS); empty when cleaning is off.
    quality: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=QUALITY_COLUMNS))
    compare: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COMPARE_COLUMNS))


def leaderboard_table(result: RatingsResult | None) -> pd.DataFrame:
    if result is None:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    t = result.leaderboard.reset_index()
    return pd.DataFrame({
        "rank": t["rank"], "model": t["model"], "rating": t["rating"].round(1),
        "95% CI": [("—" if math.isnan(lo) else f"{lo:.0f} – {hi:.0f}") for lo, hi in zip(t["ci_low"], t["ci_high"],
                                                                                         strict=True)],
        "battles": t["n_battles"], "W/L/T": [f"{w}/{lo}/{ti}" for w, lo, ti in zip(t["wins"], t["losses"], t["ties"],
                                                                                   strict=True)],
        "online Elo": t["online_elo"].round(1),
    })


def checkpoint_records(store: Store, kl: Mapping[str, KLEstimate]) -> pd.DataFrame:
    """One row per checkpoint, oldest first: its training record's held-out metrics and the KL estimate."""
    rows = []
    for c in store.checkpoints.list():
        rec = CheckpointRecord.registered(c)
        before, after = rec.heldout_before, rec.heldout_after
        estimate = kl.get(rec.id)
        rows.append({
            "checkpoint": rec.id, "parent": rec.parent or "sft",
            "created": rec.created_local(), "loss": loss_label(rec.hyperparameters.get("loss", "sigmoid")),
            "pairs": rec.pairs, "steps": rec.steps, "β": rec.beta,
            "held-out pairs": after and after.pairs,
            "held-out acc before": before and before.accuracy, "held-out acc after": after and after.accuracy,
            "held-out margin after": after and after.margin,
            "KL to ref": None if estimate is None else round(estimate.mean, 3),
            "KL stderr": None if estimate is None else round(estimate.stderr, 3),
            **reward_columns(estimate),
        })
    return pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)


def reward_columns(estimate: KLEstimate | None) -> dict[str, float | None]:
    """The reward model's mean reward on the KL estimate's samples, when one scored them."""
    if estimate is None or estimate.reward_mean is None:
        return {"RM reward": None, "RM reward stderr": None}
    return {"RM reward": round(estimate.reward_mean, 3), "RM reward stderr": round(estimate.reward_stderr or 0.0, 3)}


def _interval(low: float | None, high: float | None) -> str:
    return "—" if low is None or high is None else f"{low:.2f} – {high:.2f}"


def judge_table(store: Store, humans: Sequence[Battle]) -> pd.DataFrame:
    """One row per stored judge: how often its two orders agreed (position consistency, Wilson
    interval), and on prompts with human votes (`humans`: the store's human battles) for the same
    pair of models, the share where it agrees with the human majority and Cohen's κ (agreement
    beyond chance; 0 = chance)."""
    rows = []
    for name in store.judges.counts_by_judge():
        battles = judge_battles(store, [name])
        consistency = position_consistency(battles)
        human = judge_human_agreement(humans, battles)
        rows.append({
            "judge": name, "battles": len(battles),
            "position consistency": None if consistency.rate is None else round(consistency.rate, 3),
            "consistency 95% CI": _interval(consistency.ci_low, consistency.ci_high),
            "pairs with human votes": human.n,
            "agreement with humans": None if human.agreement is None else round(human.agreement, 3),
            "agreement 95% CI": _interval(human.ci_low, human.ci_high),
            "Cohen's κ": None if human.kappa.kappa is None else round(human.kappa.kappa, 3),
            "κ 95% CI": _interval(human.kappa.ci_low, human.kappa.ci_high),
        })
    return pd.DataFrame(rows, columns=JUDGE_COLUMNS)


def with_length_control(table: pd.DataFrame, battles: Sequence[Battle], baseline: str, bootstrap: int,
                        seed: int) -> pd.DataFrame:
    """The win-rate table with each model's length-controlled win rate against the baseline and its
    bootstrap interval (`evals.winrate.length_controlled_table`), over the battles that know both
    answers' lengths; None where there are none."""
    measured = [b for b in with_lengths(battles) if b.len_a is not None and b.len_b is not None]
    lc = length_controlled_table(measured, baseline, bootstrap, seed) if measured else pd.DataFrame()
    if lc.empty:
        return table.assign(**dict.fromkeys(LC_KEYS, None))
    return table.merge(lc[["model", *LC_KEYS]], on="model", how="left")


def style_display(result: RatingsResult | None) -> pd.DataFrame:
    """The style coefficients of style-controlled ratings, as people read them."""
    if result is None or result.style is None:
        return pd.DataFrame(columns=STYLE_COLUMNS)
    t = result.style.reset_index()
    return pd.DataFrame({
        "style feature": t.iloc[:, 0], "coefficient (log-odds)": t["coefficient"].round(3),
        "95% CI": [_interval(lo, hi) for lo, hi in zip(t["ci_low"], t["ci_high"], strict=True)],
        "Elo per typical difference": t["elo"].round(1),
    })


def build_report(store: Store, human: bool = True, judges: Sequence[str] = (), baseline: str = "sft",
                 anchor: str | None = None, bootstrap: int = 1000, seed: int = 0,
                 kl: Mapping[str, KLEstimate] | None = None, extra: Sequence[Battle] = (),
                 category: str | None = None, style_control: bool = False,
                 cleaning: CleaningConfig | None = None, exclude: Sequence[str] = RULES) -> Report:
    """Everything the tab shows. `extra`: more battles (rows of a Chatbot Arena file, say);
    `category`: only the battles on prompts of that prompt-set category; `style_control`: ratings
    at equal answer style (Chatbot Arena's style control: length, headers, lists, bold); `cleaning`:
    the cleaning rules' settings (`evals.cleaning`; None: no cleaning), of which the battles flagged
    by the rules named in `exclude` are left out of every table (all are counted in `quality`)."""
    humans = human_battles(store)  # also what the judges are compared with
    battles = (humans if human else []) + judge_battles(store, judges) + list(extra)
    quality = compare = None
    if cleaning is not None and battles:
        human_flags = clean(humans, cleaning) if humans else None
        # Human votes alone (the usual view) are the battles: their flags serve for both.
        same = human and len(battles) == len(humans)
        flagged = human_flags if same and human_flags is not None else clean(battles, cleaning)
        everything, battles = battles, kept(battles, flagged, exclude)
        quality = quality_table(flagged)
        compare = compare_table(everything, battles)
        humans = kept(humans, human_flags, exclude) if human_flags is not None else humans
    found = categories(battles)
    if category:
        battles = in_category(battles, category)
    models = models_in(battles)
    records = checkpoint_records(store, kl or {})
    ratings = None
    message = f"{len(battles)} battles among {len(models)} models" + (f" in category {category!r}" if category else "")
    if len(models) >= 2:
        anchor = anchor if anchor in models else None
        style = style_features(battles) if style_control else None
        ratings = compute_ratings(index_battles(battles), bootstrap=bootstrap, anchor=anchor, seed=seed,
                                  style=style)
        message += f"; ratings anchored at {ratings.anchor} = 1000, 95% intervals from {bootstrap} bootstrap rounds"
        if style_control:
            message += "; **style-controlled**: each rating is the model's at equal length, headers, lists and bold"
        if ratings.warnings:
            message += "\n\n" + "\n".join(f"⚠ {w}" for w in ratings.warnings)
    else:
        message += ": ratings need battles between at least 2 models (vote, or run a judge)"
    win_rates = (with_length_control(win_rate_table(battles, baseline), battles, baseline, bootstrap, seed)
                 if battles else pd.DataFrame())
    return Report(
        n_battles=len(battles), ratings=ratings,
        leaderboard=leaderboard_table(ratings),
        win_rates=win_rates,
        timeline=checkpoint_timeline(battles, store.checkpoints.list(), baseline),
        checkpoints=records, judges=judge_table(store, humans), message=message,
        style=style_display(ratings), categories=found,
        **({} if quality is None else {"quality": quality, "compare": compare}),
    )


def quality_table(report: CleaningReport) -> pd.DataFrame:
    """What each cleaning rule flagged, one row per identity word, flagged voter, duplicated prompt
    and capped voter, as people read it."""
    rows = [{"rule": "identity leak", "flagged": word, "battles excluded": n, "evidence": "named in the prompt or "
             "an answer of an anonymous battle"} for word, n in sorted(report.identity_words.items())]
    voters = Counter(flag.split(":", 1)[1] for flags in report.flags for flag in flags
                     if flag.startswith("outlier-voter:"))
    rows += [{"rule": f"outlier voter ({e.test})", "flagged": e.voter, "battles excluded": voters[e.voter],
              "evidence": e.detail} for e in report.outlier_voters]
    rows += [{"rule": "duplicate prompt", "flagged": prompt.strip()[:80], "battles excluded": n - k,
              "evidence": f"asked {n} times; {k} kept"} for prompt, (n, k) in report.duplicated_prompts.items()]
    repeats = sum("repeat-vote" in f for f in report.flags)
    if repeats:
        rows.append({"rule": "repeat vote", "flagged": "", "battles excluded": repeats,
                     "evidence": "a voter's second vote on the same prompt and answers"})
    rows += [{"rule": "over the daily cap", "flagged": voter, "battles excluded": n, "evidence": ""}
             for voter, n in report.capped_voters.items()]
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)


def compare_table(everything: Sequence[Battle], cleaned: Sequence[Battle]) -> pd.DataFrame:
    """Each model's point rating with and without the flagged battles (no bootstrap), side by side,
    both anchored at 1000 on one model ("sft" where both have it)."""
    common = sorted(set(models_in(everything)) & set(models_in(cleaned)))
    anchor = "sft" if "sft" in common else (common[0] if common else None)

    def point(battles: Sequence[Battle]) -> dict[str, float]:
        if len(models_in(battles)) < 2 or anchor is None:
            return {}
        indexed = index_battles(battles)
        ratings = fit_ratings(aggregate(indexed), anchor=indexed.models.index(anchor))
        return dict(zip(indexed.models, ratings, strict=True))

    after, before = point(cleaned), point(everything)
    rows = [{"model": m, "rating, cleaned": round(after[m], 1) if m in after else None,
             "rating, all battles": round(before[m], 1) if m in before else None,
             "change": round(after[m] - before[m], 1) if m in after and m in before else None}
            for m in sorted(set(before) | set(after))]
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def reward_model_table(folders: Sequence[Path]) -> pd.DataFrame:
    """Trained reward models, newest first, with their held-out accuracy and margin before → after."""
    rows = []
    for folder in folders:
        try:
            rec = json.loads((folder / REWARD_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        held, pairs = rec.get("heldout") or {}, rec.get("pairs") or {}
        before, after = held.get("before") or {}, held.get("after") or {}
        rows.append({"reward model": folder.name, "created": rec.get("created"), "pairs": pairs.get("count"),
                     "held-out pairs": pairs.get("heldout"), "steps": len(rec.get("steps", [])),
                     "held-out acc before": before.get("accuracy"), "held-out acc after": after.get("accuracy"),
                     "held-out margin after": after.get("margin")})
    columns = ["reward model", "created", "pairs", "held-out pairs", "steps", "held-out acc before",
               "held-out acc after", "held-out margin after"]
    return pd.DataFrame(rows[::-1], columns=columns)


HINT_WIDTH = 44  # characters per line of an empty plot's hint: fits the narrowest plot (three in a row)


def empty_figure(title: str, hint: str) -> go.Figure:
    """A plot with nothing to show yet says what to do instead of drawing blank axes."""
    fig = go.Figure()
    fig.add_annotation(text="<br>".join(textwrap.wrap(hint, HINT_WIDTH)), showarrow=False, xref="paper",
                       yref="paper", x=0.5, y=0.5, font={"size": 14})
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, **LAYOUT)
    return fig


def rating_figure(result: RatingsResult) -> go.Figure:
    """Ratings with their 95% intervals, best on top."""
    t = result.leaderboard.iloc[::-1]
    fig = go.Figure(go.Scatter(
        x=t["rating"], y=list(t.index), mode="markers", marker={"size": 10},
        error_x={"type": "data", "symmetric": False, "array": (t["ci_high"] - t["rating"]).fillna(0),
                 "arrayminus": (t["rating"] - t["ci_low"]).fillna(0)},
        hovertemplate="%{y}: %{x:.1f}<extra></extra>",
    ))
    fig.update_layout(title="Bradley–Terry rating (Elo scale) with 95% bootstrap interval", xaxis_title="rating",
                      **LAYOUT)
    return fig


def heatmap(frame: pd.DataFrame, title: str, fmt: str, zmin: float | None = None, zmax: float | None = None,
            colorscale: str = "RdBu") -> go.Figure:
    """A model × model matrix, row against column, values written in the cells. RdBu (diverging,
    white at ½) suits probabilities; counts want a sequential scale."""
    values = frame.to_numpy(dtype=float)
    text = [["" if math.isnan(v) else format(v, fmt) for v in row] for row in values]
    fig = go.Figure(go.Heatmap(z=values, x=list(frame.columns), y=list(frame.index), text=text,
                               texttemplate="%{text}", colorscale=colorscale, zmin=zmin, zmax=zmax,
                               hovertemplate="%{y} vs %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=title, yaxis={"autorange": "reversed"}, **LAYOUT)
    return fig


def timeline_figure(timeline: pd.DataFrame, baseline: str) -> go.Figure:
    """Each checkpoint's win rate against the baseline, in training order, with 95% intervals."""
    title = f"Checkpoints' win rate against {baseline} (ties ½)"
    if timeline.empty:
        return empty_figure(title, f"No checkpoint has battles against {baseline} yet — train one on the Train tab, "
                                   "then vote on it or run a judge")
    fig = go.Figure(go.Scatter(
        x=timeline["checkpoint"], y=timeline["rate"], mode="lines+markers",
        error_y={"type": "data", "symmetric": False, "array": timeline["ci_high"] - timeline["rate"],
                 "arrayminus": timeline["rate"] - timeline["ci_low"]},
        customdata=timeline[["n"]], hovertemplate="%{x}: %{y:.2f} (n=%{customdata[0]})<extra></extra>",
    ))
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="no better than " + baseline)
    fig.update_layout(title=title, yaxis={"range": [0, 1]}, **LAYOUT)
    return fig


def reward_kl_figure(records: pd.DataFrame) -> go.Figure:
    """Held-out reward margin against KL to the reference, one point per checkpoint with both."""
    known = records.dropna(subset=["KL to ref", "held-out margin after"])
    title = "Held-out reward margin vs KL(π_θ ‖ π_ref)"
    if known.empty:
        return empty_figure(title, "No checkpoint with a held-out margin and a KL estimate yet — train one "
                                   "with held-out pairs, then press “Estimate KL”")
    fig = go.Figure(go.Scatter(
        x=known["KL to ref"], y=known["held-out margin after"], mode="markers+text", text=known["checkpoint"],
        textposition="top center", error_x={"type": "data", "array": known["KL stderr"]},
    ))
    fig.update_layout(title=title, xaxis_title="KL to reference (nats)",
                      yaxis_title="held-out margin r_w − r_l", **LAYOUT)
    return fig


def reward_model_kl_figure(records: pd.DataFrame, kl: Mapping[str, KLEstimate]) -> go.Figure:
    """The reward model's mean reward on the eval prompts against KL to the reference, one point per
    checkpoint (DPO and its siblings, RLHF) marked by how it trained, and the SFT model at KL 0:
    which route bought more reward per nat of drift."""
    known = records.dropna(subset=["KL to ref", "RM reward"])
    sft = kl.get("sft")
    names = {e.reward_model for e in kl.values() if e.reward_model}
    title = "Reward-model reward vs KL(π_θ ‖ π_ref)" + (f" ({', '.join(sorted(names))})" if names else "")
    if known.empty:
        return empty_figure(title, "No checkpoint scored by a reward model yet — pick a reward model and press "
                                   "“Estimate KL”")
    fig = go.Figure()
    for method, group in known.groupby("loss", sort=True):
        fig.add_trace(go.Scatter(
            x=group["KL to ref"], y=group["RM reward"], mode="markers+text", name=str(method),
            text=group["checkpoint"], textposition="top center",
            error_x={"type": "data", "array": group["KL stderr"]},
            error_y={"type": "data", "array": group["RM reward stderr"]}))
    if sft is not None and sft.reward_mean is not None:
        fig.add_trace(go.Scatter(x=[0.0], y=[sft.reward_mean], mode="markers+text", name="sft", text=["sft"],
                                 textposition="top center", marker={"symbol": "diamond", "size": 11},
                                 error_y={"type": "data", "array": [sft.reward_stderr or 0.0]}))
    fig.update_layout(title=title, xaxis_title="KL to reference (nats)", yaxis_title="mean reward r_φ(x, y)",
                      **LAYOUT)
    return fig


def win_rate_display(table: pd.DataFrame) -> pd.DataFrame:
    """The win-rate table as people read it: rounded, the interval in one column."""
    if table.empty:
        return pd.DataFrame(columns=WIN_RATE_COLUMNS)
    table = table.assign(**{k: None for k in LC_KEYS if k not in table})  # a table without length control
    return pd.DataFrame({
        "model": table["model"], "vs": table["baseline"], "win rate": table["rate"].round(3),
        "95% CI": [f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)],
        "LC win rate": _rounded(table["lc_win_rate"]),
        "LC 95% CI": _intervals(table["lc_ci_low"], table["lc_ci_high"]),
        "joint LC win rate": _rounded(table["joint_lc_win_rate"]),
        "joint LC 95% CI": _intervals(table["joint_lc_ci_low"], table["joint_lc_ci_high"]),
        "n": table["n"], "votes": table["n_votes"],
        "W/L/T": [f"{w}/{lo}/{t}" for w, lo, t in zip(table["wins"], table["losses"], table["ties"], strict=True)],
        "mean length": table["mean_len"].round(0), "baseline mean length": table["baseline_mean_len"].round(0),
        # Pairs from rankings share a vote (the Wilson interval is too narrow); an LC figure to distrust.
        "note": ["; ".join(t for t in (note, warning) if isinstance(t, str) and t)
                 for note, warning in zip(table["note"], table["lc_warning"], strict=True)],
    })


def _rounded(values: pd.Series) -> list[float | None]:
    return [None if v is None or pd.isna(v) else round(v, 3) for v in values]


def _intervals(lows: pd.Series, highs: pd.Series) -> list[str]:
    return [_interval(None if pd.isna(lo) else lo, None if pd.isna(hi) else hi)
            for lo, hi in zip(lows, highs, strict=True)]


def write_tables(report: Report, out_dir: Path) -> list[Path]:
    """Every table as CSV and as JSON records (matrices keep their row names), plus the ratings in
    the `playground ratings` JSON format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"leaderboard": report.leaderboard, "win_rates": report.win_rates, "timeline": report.timeline,
              "checkpoints": report.checkpoints, "judges": report.judges, "style": report.style,
              "data_quality": report.quality, "ratings_cleaned_vs_all": report.compare}
    if report.ratings is not None:
        tables |= {"battle_counts": report.ratings.battles, "win_fraction": report.ratings.win_fraction,
                   "predicted": report.ratings.predicted}
    paths = []
    for name, table in tables.items():
        matrix = name in ("battle_counts", "win_fraction", "predicted")
        table.to_csv(out_dir / f"{name}.csv", index=matrix)
        (table.reset_index() if matrix else table).to_json(out_dir / f"{name}.json", orient="records", indent=2)
        paths += [out_dir / f"{name}.csv", out_dir / f"{name}.json"]
    if report.ratings is not None:
        write_json(out_dir / "ratings.json", to_json(report.ratings))
        paths.append(out_dir / "ratings.json")
    return paths


def zip_tables(paths: Sequence[Path], archive: Path) -> Path:
    """The tables in one zip (one download instead of a dozen), written atomically."""
    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for path in paths:
                z.write(path, path.name)

    write_file(archive, write)
    return archive
