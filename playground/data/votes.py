"""Votes between model responses, and how they become preference data.

A vote compares k = 2..4 responses to one prompt. With two, the voter picks "a", "b", "tie" or
"both_bad"; with any k they may instead rank them all ("ranking", best first), or call them all
flawed ("both_bad" with k > 2: the voting queue's "All flawed"). Ties and both-bad carry no
preference, so they are kept for the record and the Arena export but give no DPO pairs.
"""

import json
import math
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from playground.core.chat import Message, require_text, voter_name
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_RESPONSES, MIN_RESPONSES
from playground.data.rows import ROLES

PAIR_OUTCOMES = ("a", "b", "tie", "both_bad")  # only for k = 2
OUTCOMES = (*PAIR_OUTCOMES, "ranking")
MAX_UNIX_TIME = 1e11  # the year 5138: past it, SQLite's REAL survives but nothing else about the vote makes sense
Binarize = Literal["all_pairs", "best_vs_random"]
BINARIZATIONS: tuple[Binarize, ...] = ("all_pairs", "best_vs_random")

# Chatbot Arena's `winner` vocabulary: every battle row here (votes, judges, files) speaks it.
ARENA_A, ARENA_B, ARENA_TIE, ARENA_BOTH_BAD = "model_a", "model_b", "tie", "tie (bothbad)"
ARENA_WINNERS = (ARENA_A, ARENA_B, ARENA_TIE, ARENA_BOTH_BAD)
_ARENA_WINNER = {"a": ARENA_A, "b": ARENA_B, "tie": ARENA_TIE, "both_bad": ARENA_BOTH_BAD}
_WIN_SCORE = {ARENA_A: 1.0, ARENA_B: 0.0, ARENA_TIE: 0.5, ARENA_BOTH_BAD: 0.5}


def win_score(winner: str) -> float:
    """model_a's score in a battle with this Arena `winner`: 1 won, 0 lost, ½ for a tie or both-bad.

    No preference counts as half a win each way (model_b scores 1 − win_score); the ratings
    (Bradley–Terry) and the win rates w = (wins + ½·ties) / n both rest on this one rule.
    """
    try:
        return _WIN_SCORE[winner]
    except KeyError:
        raise PlaygroundError(f"winner {winner!r} is not one of {', '.join(ARENA_WINNERS)}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PlaygroundError(f"{what} must be plain JSON data ({exc})") from None


@dataclass(frozen=True)
class Response:
    model: str  # a role ("sft", "reference", "policy") or a checkpoint id ("ckpt-0003"), as shown
    text: str
    scores: dict[str, float] = field(default_factory=dict)  # e.g. logp_policy, logp_ref, reward
    # The model as rated on the leaderboard, fixed when the response was generated: "policy" is the
    # checkpoint that served, a fresh policy or a reference with the SFT weights is "sft". None
    # (votes from before it was recorded): rated as `model`.
    rated_as: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise PlaygroundError("every response needs a model name")
        if not isinstance(self.text, str):
            raise PlaygroundError(f"response text from {self.model!r} must be a string")
        require_text(self.model, "a response's model name")
        if self.rated_as is not None and (not isinstance(self.rated_as, str) or not self.rated_as.strip()):
            raise PlaygroundError(f"the rated name of {self.model!r} must be a non-empty string or None")
        if self.rated_as is not None:
            require_text(self.rated_as, f"the rated name of {self.model!r}")
        require_text(self.text, f"the response from {self.model!r}")
        if not isinstance(self.scores, dict):
            raise PlaygroundError(f"scores of {self.model!r} must be a dict of name to number")
        for key, value in self.scores.items():
            if not isinstance(key, str) or not _is_number(value):
                raise PlaygroundError(f"score {key!r} of {self.model!r} must be a finite number named by a string")


@dataclass(frozen=True, kw_only=True)
class Vote:
    prompt: list[Message]  # chat messages, possibly starting with a system message
    responses: tuple[Response, ...]  # 2..4, in the order shown (slot 0 is "a")
    outcome: str  # one of OUTCOMES
    ranking: tuple[int, ...] | None = None  # response indices, best first; only for "ranking"
    voter: str
    settings: dict[str, Any] = field(default_factory=dict)  # generation settings, seed included
    anonymous: bool = False  # the model names were hidden while voting (Arena's "anony" battles)
    created_at: float = field(default_factory=time.time)
    item: int | None = None  # the prompt-set prompt voted on in the queue; None for playground votes
    id: int | None = None  # set once stored

    def __post_init__(self) -> None:
        # The UI and JSON hand in lists; as tuples a stored vote compares equal to the one added.
        object.__setattr__(self, "responses", tuple(self.responses))
        self._adopt_settings_rated_as()
        if self.ranking is not None:
            object.__setattr__(self, "ranking", tuple(self.ranking))
        object.__setattr__(self, "voter", voter_name(self.voter))
        self.validate()

    def _adopt_settings_rated_as(self) -> None:
        """Votes stored before schema 5 (and callers of that time) kept the rated names as a list in
        `settings["rated_as"]`; a well-formed list moves onto the responses' `rated_as`."""
        rated = self.settings.get("rated_as") if isinstance(self.settings, dict) else None
        if (isinstance(rated, list) and len(rated) == len(self.responses)
                and all(isinstance(n, str) and n.strip() for n in rated)
                and all(isinstance(r, Response) and r.rated_as is None for r in self.responses)):
            moved = tuple(replace(r, rated_as=n) for r, n in zip(self.responses, rated, strict=True))
            object.__setattr__(self, "responses", moved)
            object.__setattr__(self, "settings", {k: v for k, v in self.settings.items() if k != "rated_as"})

    def validate(self) -> None:
        """Raise `PlaygroundError` saying what is inconsistent; runs on construction."""
        check_prompt(self.prompt)
        k = len(self.responses)
        if not MIN_RESPONSES <= k <= MAX_RESPONSES:
            raise PlaygroundError(f"a vote compares {MIN_RESPONSES} to {MAX_RESPONSES} responses, got {k}")
        if not all(isinstance(r, Response) for r in self.responses):
            raise PlaygroundError("responses must be Response objects")
        if self.outcome not in OUTCOMES:
            raise PlaygroundError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        if self.outcome in PAIR_OUTCOMES and self.outcome != "both_bad" and k != 2:  # both_bad: all flawed
            raise PlaygroundError(f"outcome {self.outcome!r} needs exactly 2 responses, got {k}; rank them instead")
        if self.outcome == "ranking":
            if self.ranking is None:
                raise PlaygroundError("outcome 'ranking' needs a ranking of the responses")
            if not all(type(i) is int for i in self.ranking) or sorted(self.ranking) != list(range(k)):
                raise PlaygroundError(
                    f"ranking {list(self.ranking)} must list each response index 0..{k - 1} exactly once"
                )
        elif self.ranking is not None:
            raise PlaygroundError(f"outcome {self.outcome!r} takes no ranking; use outcome 'ranking'")
        check_record(self.anonymous, self.item, self.created_at, self.settings)


def check_prompt(prompt: Any) -> None:
    """A vote's prompt: a non-empty list of chat messages with known roles and text content."""
    if not isinstance(prompt, list) or not prompt:
        raise PlaygroundError("the prompt must be a non-empty list of chat messages")
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise PlaygroundError(f"prompt message {i} must have string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise PlaygroundError(f"prompt message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        require_text(m["content"], f"prompt message {i}")


def check_record(anonymous: Any, item: Any, created_at: Any, settings: Any) -> None:
    """The fields every stored vote has besides its prompt and responses."""
    if not isinstance(anonymous, bool):
        raise PlaygroundError("anonymous must be true or false")
    if item is not None and type(item) is not int:
        raise PlaygroundError("item must be a prompt id (an integer) or None")
    if not _is_number(created_at) or not 0 <= created_at < MAX_UNIX_TIME:
        raise PlaygroundError("created_at must be a unix time in seconds")
    if not isinstance(settings, dict) or not all(isinstance(key, str) for key in settings):
        raise PlaygroundError("settings must be a dict with string keys")
    _check_json(settings, "settings")


def vote_pairs(vote: Vote) -> list[tuple[int, int]]:
    """(winner index, loser index) for every preference the vote states."""
    if vote.outcome == "a":
        return [(0, 1)]
    if vote.outcome == "b":
        return [(1, 0)]
    if vote.outcome == "ranking":
        assert vote.ranking is not None  # Vote.validate guarantees it
        r = vote.ranking
        return [(r[i], r[j]) for i in range(len(r)) for j in range(i + 1, len(r))]
    return []


def _binarized_pairs(vote: Vote, position: int, binarize: Binarize, seed: int) -> list[tuple[int, int]]:
    pairs = vote_pairs(vote)
    if binarize == "all_pairs" or len(pairs) <= 1:
        return pairs
    assert vote.ranking is not None  # only a ranking of k > 2 gives more than one pair
    # One generator per vote keyed by its id, so a vote's pick does not shift when other votes are
    # added or filtered out. (String seeds hash with SHA-512: the same on every run and machine.)
    key = vote.id if vote.id is not None else f"position {position}"
    rng = random.Random(f"{seed}/{key}")
    best, *rest = vote.ranking
    return [(best, rng.choice(rest))]


def to_trl_rows(votes: list[Vote], binarize: Binarize = "all_pairs", seed: int = 0) -> list[dict[str, Any]]:
    """Conversational TRL preference rows, plus `vote_id`, `chosen_model`, `rejected_model`, `voter`.

    A ranking gives every (better, worse) pair ("all_pairs"), or, as in UltraFeedback binarized,
    the best response against one other drawn at random ("best_vs_random", fixed by `seed`).
    A pair with an empty (whitespace-only) response is left out: it has no text to learn from, and
    TRL rows with an empty completion are refused on import and by the scorer.
    """
    if binarize not in BINARIZATIONS:
        raise PlaygroundError(f"binarize {binarize!r} is not one of {', '.join(BINARIZATIONS)}")
    rows = []
    for position, vote in enumerate(votes):
        for win, lose in _binarized_pairs(vote, position, binarize, seed):
            chosen, rejected = vote.responses[win], vote.responses[lose]
            if not chosen.text.strip() or not rejected.text.strip():
                continue
            rows.append({
                "prompt": [dict(m) for m in vote.prompt],
                "chosen": [{"role": "assistant", "content": chosen.text}],
                "rejected": [{"role": "assistant", "content": rejected.text}],
                "vote_id": vote.id,
                "chosen_model": chosen.model,
                "rejected_model": rejected.model,
                "voter": vote.voter,
            })
    return rows


def rated_names(vote: Vote) -> tuple[str, ...]:
    """Each response's model as rated: its `rated_as` (the checkpoint that generated it), else the
    name shown."""
    return tuple(r.rated_as or r.model for r in vote.responses)


def to_arena_rows(votes: list[Vote], rated: bool = False) -> list[dict[str, Any]]:
    """Chatbot Arena battle rows. A ranking of k responses is one battle per unordered pair, in
    slot order, won by whichever of the two is ranked higher. `rated`: name models as rated
    (`rated_names`) rather than as shown."""
    rows = []
    for vote in votes:
        names = rated_names(vote) if rated else tuple(r.model for r in vote.responses)
        if vote.outcome == "ranking":
            assert vote.ranking is not None
            place = {slot: p for p, slot in enumerate(vote.ranking)}
            k = len(vote.responses)
            battles = [
                (i, j, ARENA_A if place[i] < place[j] else ARENA_B) for i in range(k) for j in range(i + 1, k)
            ]
        else:
            k = len(vote.responses)  # k > 2 only for "both_bad" (all flawed): a both-bad tie per pair
            battles = [(i, j, _ARENA_WINNER[vote.outcome]) for i in range(k) for j in range(i + 1, k)]
        rows.extend(
            {
                "model_a": names[i],
                "model_b": names[j],
                "winner": winner,
                "tstamp": vote.created_at,
                "vote_id": vote.id,
                "voter": vote.voter,
                "anonymous": vote.anonymous,
            }
            for i, j, winner in battles
        )
    return rows
