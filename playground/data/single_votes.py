"""Single-answer votes: one response judged on its own, 👍 or 👎, and the unpaired rows KTO trains on.

A pairwise vote says which of two answers is better; a single vote says whether one answer is good.
Both come from the same screens (the Playground's rounds, the voting queue's items) and are kept
apart: a single vote is no battle, so it never enters a rating, a win rate or a DPO pair. What it
feeds is TRL's unpaired preference format, one row per judged completion,

    {"prompt": [...messages], "completion": [{"role": "assistant", "content": ...}], "label": bool},

which KTO trains on. The rows from votes (`unpaired_rows`) are the 👍 (True) and 👎 (False) single
votes, and both sides of every *Both bad* / *All flawed* vote (False): two answers that were each
judged bad, though neither is preferred. Chosen and rejected answers of pairwise votes become
desirable and undesirable rows where the pairs are unpaired for training (`playground.training`).
"""

import time
from dataclasses import dataclass, field
from typing import Any

from playground.core.chat import Message, voter_name
from playground.core.errors import PlaygroundError
from playground.data.rows import UnpairedRow
from playground.data.votes import Response, Vote, check_prompt, check_record

THUMBS = {"up": True, "down": False}  # the API's words for a single vote, and the label each stores


def thumb_label(thumb: str) -> bool:
    """True for "up" (👍, desirable), False for "down" (👎)."""
    try:
        return THUMBS[thumb]
    except (KeyError, TypeError):
        raise PlaygroundError(f"a single vote is {' or '.join(map(repr, THUMBS))}, not {thumb!r}") from None


@dataclass(frozen=True, kw_only=True)
class SingleVote:
    prompt: list[Message]
    response: Response
    label: bool  # True 👍 (desirable), False 👎 (undesirable)
    slot: int  # where the response was shown (0 = A); the other responses shown with it are not kept
    voter: str
    settings: dict[str, Any] = field(default_factory=dict)  # generation settings, seed included
    anonymous: bool = False  # the model name was hidden while voting
    created_at: float = field(default_factory=time.time)
    item: int | None = None  # the prompt-set prompt voted on in the queue; None for playground votes
    id: int | None = None  # set once stored

    def __post_init__(self) -> None:
        object.__setattr__(self, "voter", voter_name(self.voter))
        check_prompt(self.prompt)
        if not isinstance(self.response, Response):
            raise PlaygroundError("a single vote's response must be a Response")
        if not isinstance(self.label, bool):
            raise PlaygroundError("a single vote's label must be true (👍) or false (👎)")
        if type(self.slot) is not int or self.slot < 0:
            raise PlaygroundError("a single vote's slot must be a response position (0 = A)")
        check_record(self.anonymous, self.item, self.created_at, self.settings)

    @property
    def thumb(self) -> str:
        return "up" if self.label else "down"


def _row(prompt: list[Message], response: Response, label: bool, **extra: Any) -> UnpairedRow:
    return UnpairedRow([dict(m) for m in prompt], [{"role": "assistant", "content": response.text}], label,
                       {"model": response.model, **extra})


def unpaired_rows(votes: list[Vote], singles: list[SingleVote]) -> list[UnpairedRow]:
    """The unpaired rows the votes give beyond their pairs (module docstring): every response of a
    both-bad vote as undesirable, then every single vote with its label. An empty (whitespace-only)
    response is left out, as for pairs: there is no text to learn from."""
    rows = [_row(v.prompt, r, False, vote_id=v.id, voter=v.voter, source="both_bad")
            for v in votes if v.outcome == "both_bad" for r in v.responses if r.text.strip()]
    rows += [_row(s.prompt, s.response, s.label, single_vote_id=s.id, voter=s.voter, source="single")
             for s in singles if s.response.text.strip()]
    return rows

