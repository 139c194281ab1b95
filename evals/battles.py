"""Battles for the leaderboard, in Chatbot Arena's row format: human votes from the store, judge
battles (kept apart, flagged with the judge's name) or a file of Arena rows.

Every row has `model_a`, `model_b`, `winner` (`playground.data.votes.ARENA_WINNERS`: `model_a`,
`model_b`, `tie`, `tie (bothbad)`), plus `source` ("human" or the judge's name) and, where the texts
are known, `len_a`/`len_b` (characters). Human rows carry `vote_id`: a ranking of k responses is
k(k−1)/2 rows of one vote, which intervals must not count as independent (`vote_key`). Rows from
the store also carry `conv_metadata` (both answers' style counts, `playground.data.style`, for
style-controlled ratings) and, when their prompt is a set prompt with a category, `category`
(`in_category` keeps one category's rows).
"""

import itertools
import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from playground.core.errors import PlaygroundError
from playground.data.store import Store
from playground.data.style import conv_metadata
from playground.data.votes import to_arena_rows

HUMAN = "human"


def vote_key(row: Mapping[str, Any]) -> Hashable | None:
    """The vote a battle row came from, as (source, vote_id): the rows of one ranking share it.
    None for a row without a vote id (or an empty one, as CSV spells it): a vote of its own. The
    source keeps equal vote ids from different databases or judges apart."""
    vote_id = row.get("vote_id")
    return None if vote_id is None or vote_id == "" else (row.get("source"), vote_id)


def _prompt_key(messages: Any) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def human_battles(store: Store) -> list[dict[str, Any]]:
    """Every stored vote as battles, models named as rated (the checkpoint that served as policy);
    a queue vote's battles carry its prompt's category."""
    categories = {item: category for item, (_, category) in store.prompt_sets.categories().items()}
    rows = []
    for vote in store.votes.list():
        category = {"category": categories[vote.item]} if vote.item in categories else {}
        # to_arena_rows gives a vote's battles for its slot pairs (i < j) in order; a pair vote is (0, 1).
        slot_pairs = itertools.combinations(range(len(vote.responses)), 2)
        for row, (i, j) in zip(to_arena_rows([vote], rated=True), slot_pairs, strict=True):
            if row["model_a"] == row["model_b"]:  # e.g. SFT against a reference with its weights: no information
                continue
            text_a, text_b = vote.responses[i].text, vote.responses[j].text
            rows.append({**row, "source": HUMAN, "len_a": len(text_a), "len_b": len(text_b),
                         "conv_metadata": conv_metadata(text_a, text_b), **category})
    return rows


def judge_battles(store: Store, judges: Sequence[str]) -> list[dict[str, Any]]:
    """The stored battles of the named judges, in the order judged; a battle on a set prompt with a
    category (the same messages) carries it."""
    categories = {_prompt_key(messages): category for messages, category in store.prompt_sets.categories().values()}
    rows = []
    for judge in judges:
        for b in store.judges.list(judge):
            category = categories.get(_prompt_key(b.prompt))
            rows.append({"model_a": b.model_a, "model_b": b.model_b, "winner": b.winner,
                         "tstamp": b.created_at, "source": b.judge, "len_a": len(b.text_a),
                         "len_b": len(b.text_b), "conv_metadata": conv_metadata(b.text_a, b.text_b),
                         **({"category": category} if category is not None else {})})
    return rows


def collect_battles(store: Store, human: bool = True, judges: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Human votes (unless `human` is False) and the battles of `judges`."""
    return (human_battles(store) if human else []) + judge_battles(store, judges)


def in_category(rows: Sequence[Mapping[str, Any]], category: str) -> list[Mapping[str, Any]]:
    """The battle rows whose `category` is `category`; none raises `PlaygroundError` naming the
    categories there are."""
    kept = [row for row in rows if row.get("category") == category]
    if not kept:
        present = categories(rows)
        raise PlaygroundError(f"no battles in category {category!r}; "
                              + (f"the categories are {', '.join(present)}" if present else "no battle has a category"))
    return kept


def categories(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The categories the battle rows carry, sorted (for a filter's choices)."""
    return sorted({row["category"] for row in rows if row.get("category")})
