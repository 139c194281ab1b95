"""Where battles (`evals.battle.Battle`) come from: human votes and judge runs in the store, and files
of Chatbot Arena rows.

Human battles are named as rated (the checkpoint that served as policy) and carry `vote_id`: a
ranking of k responses is k(k−1)/2 battles of one vote, which intervals must not count as
independent (`evals.battle.vote_key`). Judge battles are kept apart, their `source` the judge's
name. Battles from the store also carry `len_a`/`len_b` (characters), `conv_metadata` (both
answers' style counts, `playground.data.style`, for style-controlled ratings), the prompt, and,
when their prompt is a set prompt with a category, `category` (`evals.battle.in_category` keeps
one category's battles). A battle of one model against itself (e.g. SFT against a reference with
its weights) says nothing about either and is left out.
"""

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.battle import Battle, parse_battle
from playground.core.errors import PlaygroundError
from playground.data.rows import RowError, read_records
from playground.data.store import Store
from playground.data.store.judges import JudgeBattle
from playground.data.style import conv_metadata
from playground.data.votes import Vote, to_arena_rows

HUMAN = "human"


def _prompt_key(messages: Any) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def vote_battles(votes: Iterable[Vote], categories: Mapping[int, str] | None = None) -> list[Battle]:
    """The votes as battles, models named as rated; a vote whose `item` has a category in
    `categories` ({set prompt id: category}) carries it."""
    known = categories or {}
    battles = []
    for vote in votes:
        # to_arena_rows gives a vote's battles for its slot pairs (i < j) in order; a pair vote is (0, 1).
        slot_pairs = itertools.combinations(range(len(vote.responses)), 2)
        for row, (i, j) in zip(to_arena_rows([vote], rated=True), slot_pairs, strict=True):
            if row["model_a"] == row["model_b"]:
                continue
            text_a, text_b = vote.responses[i].text, vote.responses[j].text
            battles.append(Battle(row["model_a"], row["model_b"], row["winner"], source=HUMAN,
                                  vote_id=row["vote_id"], tstamp=row["tstamp"], len_a=len(text_a), len_b=len(text_b),
                                  conv_metadata=conv_metadata(text_a, text_b), category=known.get(vote.item),
                                  prompt=vote.prompt, voter=vote.voter, anonymous=vote.anonymous,
                                  texts=(text_a, text_b)))
    return battles


def human_battles(store: Store) -> list[Battle]:
    """Every stored vote as battles (`vote_battles`); a queue vote's battles carry its prompt's category."""
    categories = {item: category for item, (_, category) in store.prompt_sets.categories().items()}
    return vote_battles(store.votes.list(), categories)


def judge_battle(stored: JudgeBattle, category: str | None = None) -> Battle:
    """One stored judge battle (`store.judges.list`) as a battle, its judge the source."""
    text_a, text_b = stored.text_a, stored.text_b
    return Battle(stored.model_a, stored.model_b, stored.winner, source=stored.judge, tstamp=stored.created_at,
                  len_a=len(text_a), len_b=len(text_b), conv_metadata=conv_metadata(text_a, text_b),
                  category=category, prompt=stored.prompt, details=stored.details, texts=(text_a, text_b))


def judge_battles(store: Store, judges: Sequence[str]) -> list[Battle]:
    """The stored battles of the named judges, in the order judged; a battle on a set prompt with a
    category (the same messages) carries it."""
    categories = {_prompt_key(messages): category for messages, category in store.prompt_sets.categories().values()}
    return [judge_battle(b, categories.get(_prompt_key(b.prompt)))
            for judge in judges for b in store.judges.list(judge) if b.model_a != b.model_b]


def read_battles(path: Path | str) -> list[Battle]:
    """The battles of a file of Chatbot Arena rows (`evals.battle.parse_battle`): JSON lines (.jsonl,
    or .json), a .json list, .csv or .parquet; the first bad row raises `PlaygroundError` with its
    line (JSONL, CSV: as an editor numbers them) or row number (Parquet, JSON list)."""
    return [battle for _, battle in read_battle_rows(path)]


def read_battle_rows(path: Path | str) -> list[tuple[Mapping[str, Any], Battle]]:
    """`read_battles` with each battle's row as the file gave it (to write it back with more fields)."""
    path = Path(path)
    if _is_json_list(path):
        records: Iterable[tuple[int, Any]] = _json_list(path)
        label = "row"
    else:
        records = read_records(path)
        label = "row" if path.suffix.lower() == ".parquet" else "line"
    battles = []
    for number, record in records:
        if isinstance(record, RowError):  # a JSONL line that is not JSON
            raise PlaygroundError(f"{path}: {record}")
        battles.append((record, parse_battle(record, f"{path}: {label} {number}")))
    if not battles:
        raise PlaygroundError(f"{path}: no battles (the file holds no rows)")
    return battles


def _is_json_list(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _json_list(path: Path) -> list[tuple[int, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PlaygroundError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PlaygroundError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return list(enumerate(data, start=1))
