"""Style counts of an answer, in Chatbot Arena's `conv_metadata` fields, for style-controlled ratings.

Chatbot Arena's style control corrects ratings for four style elements of each answer: its length
in tokens and its Markdown headers, list items and bold spans. Its public battle data carries them
per row as `conv_metadata`:

    sum_assistant_a_tokens: int
    header_count_a: {"h1": n, …, "h6": n}
    list_count_a: {"ordered": n, "unordered": n}
    bold_count_a: {"**": n, "__": n}

and the `_b` twins. The Markdown counts use Arena's regular expressions (FastChat's
`add_markdown_info.py`), after removing fenced code blocks, so a `# comment` in code is no header.

Tokens: Arena counted with tiktoken; we have no BPE tokenizer that fits every model, so
`count_tokens` counts words and punctuation marks (each maximal run of letters, digits and
underscores is one token, each other non-space character one). That is roughly 0.75× tiktoken's
count on English prose and more on code; only the ratio (a − b)/(a + b + 1) of two answers enters
the fit, so the scale mostly cancels.
"""

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from playground.core.errors import PlaygroundError
from playground.data.votes import Vote, to_arena_rows

HEADER_LEVELS = ("h1", "h2", "h3", "h4", "h5", "h6")
LIST_KINDS = ("ordered", "unordered")
BOLD_KINDS = ("**", "__")
# The style elements in the order of the fit's features, and their conv_metadata field per side.
STYLE_ELEMENTS = ("tokens", "headers", "lists", "bold")
_FIELDS = {"tokens": "sum_assistant_{}_tokens", "headers": "header_count_{}", "lists": "list_count_{}",
           "bold": "bold_count_{}"}
_KINDS: dict[str, tuple[str, ...]] = {"headers": HEADER_LEVELS, "lists": LIST_KINDS, "bold": BOLD_KINDS}

_CODE_BLOCK = re.compile(r"```[^`]*```")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_HEADERS = {level: re.compile(rf"^#{{{n}}}\s", re.MULTILINE) for n, level in enumerate(HEADER_LEVELS, start=1)}
_LISTS = {"ordered": re.compile(r"^\s*\d+\.\s", re.MULTILINE), "unordered": re.compile(r"^\s*[-*+]\s", re.MULTILINE)}
_BOLD = {"**": re.compile(r"\*\*[^*\n]+\*\*"), "__": re.compile(r"__[^_\n]+__")}


def count_tokens(text: str) -> int:
    """Words and punctuation marks: a tokenizer-free stand-in for tiktoken (module docstring)."""
    return len(_TOKEN.findall(text))


def style_counts(text: str, side: str) -> dict[str, Any]:
    """One answer's `conv_metadata` fields for `side` ("a" or "b")."""
    if side not in ("a", "b"):
        raise ValueError(f"side must be 'a' or 'b', got {side!r}")
    prose = _CODE_BLOCK.sub("", text)  # as Arena: Markdown inside code blocks is code, not style
    return {
        f"sum_assistant_{side}_tokens": count_tokens(text),
        f"header_count_{side}": {k: len(p.findall(prose)) for k, p in _HEADERS.items()},
        f"list_count_{side}": {k: len(p.findall(prose)) for k, p in _LISTS.items()},
        f"bold_count_{side}": {k: len(p.findall(prose)) for k, p in _BOLD.items()},
    }


def conv_metadata(text_a: str, text_b: str) -> dict[str, Any]:
    """A battle's `conv_metadata`: the style counts of both answers."""
    return style_counts(text_a, "a") | style_counts(text_b, "b")


def style_totals(metadata: Any, side: str, where: str = "conv_metadata") -> tuple[int, int, int, int]:
    """(tokens, headers, list items, bold spans) of one side of a `conv_metadata` object, each
    Markdown element summed over its kinds; a missing or malformed field raises `PlaygroundError`
    naming `where`. A count may also be a plain integer (the total), as FastChat accepts."""
    if not isinstance(metadata, Mapping):
        raise PlaygroundError(f"{where}: conv_metadata must be an object with the style counts, got "
                              f"{type(metadata).__name__}")
    totals = []
    for element in STYLE_ELEMENTS:
        field = _FIELDS[element].format(side)
        if field not in metadata:
            raise PlaygroundError(f"{where}: conv_metadata has no {field} (style control needs "
                                  f"{', '.join(f.format(side) for f in _FIELDS.values())} and the other side's)")
        value = metadata[field]
        parts = list(value.values()) if isinstance(value, Mapping) and element in _KINDS else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in parts):
            kinds = f" or an object {{{', '.join(_KINDS[element])}}} of counts" if element in _KINDS else ""
            raise PlaygroundError(f"{where}: conv_metadata.{field} must be a count ≥ 0{kinds}, got {value!r}")
        totals.append(sum(parts))
    return totals[0], totals[1], totals[2], totals[3]


def arena_rows_with_style(votes: Sequence[Vote]) -> list[dict[str, Any]]:
    """`to_arena_rows(votes)` (models as shown), each battle with its `conv_metadata`: what the
    Arena export writes, so that `playground ratings --style-control` can read it."""
    rows = []
    for vote in votes:
        # to_arena_rows gives a vote's battles for its slot pairs (i < j) in order
        slot_pairs = itertools.combinations(range(len(vote.responses)), 2)
        for row, (i, j) in zip(to_arena_rows([vote]), slot_pairs, strict=True):
            rows.append({**row, "conv_metadata": conv_metadata(vote.responses[i].text, vote.responses[j].text)})
    return rows
