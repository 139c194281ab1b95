"""Style counts in Chatbot Arena's conv_metadata fields (playground.data.style)."""

import pytest

from playground.core.errors import PlaygroundError
from playground.data.style import arena_rows_with_style, conv_metadata, count_tokens, style_counts, style_totals
from playground.data.votes import Response, Vote, to_arena_rows

ANSWER = """# Plan
Some **bold** text and __also bold__ and a ** not bold.
## Steps
1. first
2. second
   - nested item
* star item
+ plus item
```python
# a comment, not a header
- not a list item
**not bold in code**
```
#not a header (no space)
"""


def test_style_counts_follow_arenas_markdown_rules() -> None:
    counts = style_counts(ANSWER, "a")
    assert counts["header_count_a"] == {"h1": 1, "h2": 1, "h3": 0, "h4": 0, "h5": 0, "h6": 0}
    assert counts["list_count_a"] == {"ordered": 2, "unordered": 3}
    assert counts["bold_count_a"] == {"**": 1, "__": 1}
    assert counts["sum_assistant_a_tokens"] == count_tokens(ANSWER)


def test_tokens_are_words_and_punctuation_marks() -> None:
    assert count_tokens("Hello, world! It's 2 o'clock.") == 12  # Hello , world ! It ' s 2 o ' clock .
    assert count_tokens("") == 0
    assert count_tokens("snake_case  x\n\ty") == 3


def test_conv_metadata_names_both_sides_and_totals_sum_the_kinds() -> None:
    meta = conv_metadata(ANSWER, "plain")
    assert set(meta) == {f"{field}_{side}" for side in "ab"
                         for field in ("header_count", "list_count", "bold_count")} | {
        "sum_assistant_a_tokens", "sum_assistant_b_tokens"}
    assert style_totals(meta, "a") == (count_tokens(ANSWER), 2, 5, 2)
    assert style_totals(meta, "b") == (1, 0, 0, 0)
    # FastChat also accepts a plain total where Arena has an object of kinds
    assert style_totals({"sum_assistant_a_tokens": 7, "header_count_a": 3, "list_count_a": {"ordered": 1},
                         "bold_count_a": 0}, "a") == (7, 3, 1, 0)


@pytest.mark.parametrize(("meta", "message"), [
    ("nope", "conv_metadata must be an object"),
    ({}, "no sum_assistant_a_tokens"),
    ({"sum_assistant_a_tokens": -1, "header_count_a": 0, "list_count_a": 0, "bold_count_a": 0}, "count ≥ 0"),
    ({"sum_assistant_a_tokens": 3, "header_count_a": {"h1": "2"}, "list_count_a": 0, "bold_count_a": 0},
     "header_count_a must be a count"),
    ({"sum_assistant_a_tokens": True, "header_count_a": 0, "list_count_a": 0, "bold_count_a": 0}, "count ≥ 0"),
])
def test_bad_style_counts_are_one_clear_error(meta: object, message: str) -> None:
    with pytest.raises(PlaygroundError, match=message):
        style_totals(meta, "a", "row 3")


def test_arena_rows_carry_each_battles_style_counts() -> None:
    responses = [Response("sft", "short"), Response("policy", ANSWER), Response("ckpt", "- one\n- two")]
    vote = Vote(prompt=[{"role": "user", "content": "Plan?"}], responses=responses, outcome="ranking",
                ranking=[1, 2, 0], voter="ana")
    rows = arena_rows_with_style([vote])
    assert [{k: v for k, v in r.items() if k != "conv_metadata"} for r in rows] == to_arena_rows([vote])
    lists = "- one\n- two"
    assert [r["conv_metadata"] for r in rows] == [conv_metadata("short", ANSWER), conv_metadata("short", lists),
                                                  conv_metadata(ANSWER, lists)]
    assert style_totals(rows[2]["conv_metadata"], "b") == (4, 0, 2, 0)  # - one - two
