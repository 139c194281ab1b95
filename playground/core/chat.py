"""What a conversation is, for every part of the engine: messages, texts, and the checks on text
people type (voter names, prompts) that the store, the logins and the rounds share."""

from typing import Any

from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_VOTER_LEN

Message = dict[str, str]
Text = str | list[Message]  # a plain string, or chat messages


def is_conversational(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def voter_name(name: str) -> str:
    """The voter name as stored: surrounding spaces dropped, so "ana " and "ana" are one voter
    (undo and the per-voter counts match on it)."""
    if not isinstance(name, str) or not name.strip():
        raise PlaygroundError("the voter name is empty; enter a name to vote under")
    name = name.strip()
    if len(name) > MAX_VOTER_LEN:
        raise PlaygroundError(f"the voter name is {len(name)} characters long; at most {MAX_VOTER_LEN} allowed")
    if not name.isprintable():
        raise PlaygroundError("the voter name contains control characters (a newline or tab?)")
    return name


def require_text(value: str, what: str) -> None:
    """Refuse a lone surrogate (half a character, as a JSON \\udXXX escape from a browser can spell
    it): no UTF-8 file, database text or tokenizer accepts one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PlaygroundError(f"{what} holds a lone surrogate (half a character), which is not text") from None
