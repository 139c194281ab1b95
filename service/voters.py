"""The name a browser votes under when nobody logs in: a guest name such as `guest-7f3a9c01`, kept
by the browser and editable there. Chatbot Arena asks nobody for a name; here votes still need one
(undo, per-voter counts, agreement between voters and the queue's "nobody twice on a prompt" go by
it), so each browser gets its own at once instead of being refused its first vote."""

import secrets

from playground.core.chat import voter_name
from playground.core.errors import PlaygroundError

GUEST_PREFIX = "guest-"
# 32 random bits: two of a few hundred guests get the same name with a chance of about 1 in 100 000.
# A shared name would merge two people's votes and keep each from the other's prompts in the queue.
GUEST_BYTES = 4


def guest_name() -> str:
    """A new guest name, `guest-` and 8 hex digits."""
    return GUEST_PREFIX + secrets.token_hex(GUEST_BYTES)


def kept_name(saved: object) -> str:
    """The name a browser kept (what it voted under before, guest or typed) while it is still a
    valid voter name; otherwise a new guest name."""
    try:
        return voter_name(saved)  # type: ignore[arg-type]  # anything may come back from the browser
    except PlaygroundError:
        return guest_name()
