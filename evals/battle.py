"""One battle between two models, the record every `evals` module reads: `Battle`, and `parse_battle`,
which makes one from a row of Chatbot Arena's format with the errors a file's reader reports.

A battle is `model_a` against `model_b` with an Arena `winner` (`playground.data.votes.ARENA_WINNERS`:
`model_a`, `model_b`, `tie`, `tie (bothbad)`), and what is known about where it came from: the
`source` ("human" or a judge's name), the `vote_id` it shares with the other battles of one ranking
(`vote_key`), the answers' lengths and style counts, the prompt's category, and for a judge's battle
its prompt and verdicts. Battles are made where they enter (`evals.battles`: the store's votes and
judge runs, a file of Arena rows) and never changed after: a frozen dataclass, checked when made, so
every module downstream reads fields it can trust instead of testing a dict for keys.

Why a dataclass and not a pandas frame with a checked schema: the consumers walk battles one at a
time (win rates, agreement units, position consistency, a category filter), and the fits that do
vector arithmetic index the battles into arrays of their own (`evals.ratings.indexed`) anyway. A
record gives those loops typed attributes, an absent value as None rather than a missing key, and
room for nested values (style counts, the prompt, a judge's verdicts) that a frame would keep in
untyped object columns. A new field goes here, with a default, and where the battles are made.
"""

import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.data.votes import ARENA_WINNERS

KEYS = ("model_a", "model_b", "winner")  # what every battle row must have


@dataclass(frozen=True, slots=True)
class Battle:
    """One battle, checked when made: two different non-empty model names, an Arena winner, and
    optional fields of the right types (`PlaygroundError` otherwise, without a location: a row's
    reader adds it, `parse_battle`)."""

    model_a: str
    model_b: str
    winner: str  # one of ARENA_WINNERS
    _: KW_ONLY
    source: str | None = None  # "human", a judge's name, or a file's name; None: a row that named none
    vote_id: int | str | None = None  # the vote it came from; None: a vote of its own (`vote_key`)
    tstamp: float | None = None  # unix time of the vote or the judge run (battles from the store)
    len_a: float | None = None  # the answers' lengths (characters, or a file's own unit)
    len_b: float | None = None
    # Both answers' style counts in Chatbot Arena's form (`playground.data.style`), as the row gave
    # them: `style_totals` checks them where style is used, so a row with bad counts still rates.
    conv_metadata: Any = None
    category: str | None = None  # the prompt's category in its prompt set
    prompt: Sequence[Message] | None = None  # the messages answered (judge battles, votes)
    details: Mapping[str, Any] | None = None  # a judge's verdicts in both orders (`evals.judge.both_orders`)
    voter: str | None = None  # who voted (Arena's `judge`); None: unknown (a judge's battle has its `source`)
    anonymous: bool | None = None  # names hidden until the vote (Arena's `anony`); None: unknown
    texts: tuple[str, str] | None = None  # the answers of a and b (each side's assistant turns, joined)

    def __post_init__(self) -> None:
        for key in ("model_a", "model_b"):
            name = getattr(self, key)
            if not isinstance(name, str) or not name.strip():
                raise PlaygroundError(f"{key} must be a non-empty string (a model name), got {name!r}")
        if self.winner not in ARENA_WINNERS:
            allowed = ", ".join(repr(w) for w in ARENA_WINNERS)
            raise PlaygroundError(f"winner is {self.winner!r}; expected one of {allowed}")
        if self.model_a == self.model_b:
            raise PlaygroundError(f"model_a and model_b are both {self.model_a!r}; a battle needs two different "
                                  "models")
        vote_id = self.vote_id
        if vote_id is not None and (isinstance(vote_id, bool) or not isinstance(vote_id, int | str)):
            raise PlaygroundError(f"vote_id must be an integer or a string (the vote the battle came from), "
                                  f"got {vote_id!r}")
        if self.source is not None and not isinstance(self.source, str):
            raise PlaygroundError(f"source must be a string, got {self.source!r}")
        if self.voter is not None and not isinstance(self.voter, str):
            raise PlaygroundError(f"the voter (judge) must be a string, got {self.voter!r}")
        if self.anonymous is not None and not isinstance(self.anonymous, bool):
            raise PlaygroundError(f"anony must be true or false, got {self.anonymous!r}")
        if self.category is not None and not isinstance(self.category, str):
            raise PlaygroundError(f"category must be a string (the prompt's category), got {self.category!r}")
        for key in ("len_a", "len_b"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not value >= 0):
                raise PlaygroundError(f"{key} must be a length ≥ 0, got {value!r}")


def parse_battle(record: object, where: str) -> Battle:
    """A battle from one row of Chatbot Arena's format: KEYS, and `vote_id`, `source`, `category`,
    `conv_metadata`, `len_a`, `len_b`, the voter (`judge`, or our exports' `voter`), `anony` (or
    `anonymous`) and the conversations (`conversation_a`/`_b`: OpenAI-style messages; the prompt is
    a's user turns, each side's text its assistant turns) where given (other fields are dropped).
    An empty cell (a CSV cell, a JSON null) is no value; CSV text is read as what it spells
    (`conv_metadata` as JSON, a length as a number). `where` ("FILE: line 3") starts every error message."""
    if not isinstance(record, Mapping):
        raise PlaygroundError(f"{where}: expected an object with {', '.join(KEYS)}, got {type(record).__name__}")
    missing = [k for k in KEYS if k not in record]
    if missing:
        raise PlaygroundError(f"{where}: missing {', '.join(missing)}; a battle needs {', '.join(KEYS)}")
    metadata = record.get("conv_metadata")
    if isinstance(metadata, str) and metadata:  # a CSV cell holds the object as JSON text
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            raise PlaygroundError(f"{where}: conv_metadata is not a JSON object") from None
    try:
        prompt, texts = _conversations(record.get("conversation_a"), record.get("conversation_b"))
        voter = _value(record.get("judge", record.get("voter")))
        anonymous = _flag(_value(record.get("anony", record.get("anonymous"))))
        tstamp = _length(record.get("tstamp"))
        return Battle(record["model_a"], record["model_b"], record["winner"], source=record.get("source"),
                      vote_id=_value(record.get("vote_id")), category=_value(record.get("category")),
                      conv_metadata=_value(metadata), len_a=_length(record.get("len_a")),
                      len_b=_length(record.get("len_b")), voter=None if voter is None else str(voter),
                      anonymous=anonymous, texts=texts, prompt=prompt,
                      tstamp=float(tstamp) if isinstance(tstamp, int | float) else None)
    except PlaygroundError as exc:
        raise PlaygroundError(f"{where}: {exc}") from None


def _conversations(a: Any, b: Any) -> tuple[list[Message] | None, tuple[str, str] | None]:
    """The prompt (a's user turns) and both sides' texts (their assistant turns, joined by a blank
    line) of Arena's `conversation_a`/`conversation_b`; (None, None) without both."""
    if a in (None, "") or b in (None, ""):
        return None, None
    if isinstance(a, str) or isinstance(b, str):  # a CSV cell holds the messages as JSON text
        try:
            a, b = json.loads(a) if isinstance(a, str) else a, json.loads(b) if isinstance(b, str) else b
        except json.JSONDecodeError:
            raise PlaygroundError("conversation_a/conversation_b are not JSON lists of messages") from None
    for side in (a, b):
        if not isinstance(side, list) or not all(isinstance(m, Mapping) and isinstance(m.get("content"), str)
                                                 and m.get("role") in ("system", "user", "assistant") for m in side):
            raise PlaygroundError("conversation_a/conversation_b must be lists of {role, content} messages")
    prompt: list[Message] = [{"role": m["role"], "content": m["content"]} for m in a if m["role"] != "assistant"]
    texts = tuple("\n\n".join(m["content"] for m in side if m["role"] == "assistant") for side in (a, b))
    return prompt, (texts[0], texts[1])


def _flag(cell: Any) -> Any:
    """A true/false cell as a bool (CSV spells it as text); anything else as it is, for the check."""
    if isinstance(cell, str) and cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    return cell


def _value(cell: Any) -> Any:
    return None if cell == "" else cell


def _length(cell: Any) -> Any:
    """A length as a row gives it; CSV text that spells a number ≥ 0 as that number."""
    if isinstance(cell, str) and cell.replace(".", "", 1).isdigit():
        return float(cell)
    return _value(cell)


def parse_battles(rows: Iterable[object]) -> list[Battle]:
    """`parse_battle` of each row, errors located as "row N" (1-based)."""
    return [parse_battle(row, f"row {n}") for n, row in enumerate(rows, start=1)]


def vote_key(battle: Battle) -> Hashable | None:
    """The vote a battle came from, as (source, vote_id): the battles of one ranking share it.
    None for a battle without a vote id: a vote of its own. The source keeps equal vote ids from
    different databases or judges apart."""
    return None if battle.vote_id is None else (battle.source, battle.vote_id)


def models_in(battles: Iterable[Battle]) -> list[str]:
    """The models that fought in the battles, sorted."""
    return sorted({name for b in battles for name in (b.model_a, b.model_b)})


def in_category(battles: Sequence[Battle], category: str) -> list[Battle]:
    """The battles whose `category` is `category`; none raises `PlaygroundError` naming the
    categories there are."""
    kept = [b for b in battles if b.category == category]
    if not kept:
        present = categories(battles)
        raise PlaygroundError(f"no battles in category {category!r}; "
                              + (f"the categories are {', '.join(present)}" if present else "no battle has a category"))
    return kept


def categories(battles: Iterable[Battle]) -> list[str]:
    """The categories the battles carry, sorted (for a filter's choices)."""
    return sorted({b.category for b in battles if b.category})
