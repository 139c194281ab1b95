"""Property tests: whatever comes in (imported rows, votes, generation settings, API calls), the
engine answers with a result or a `PlaygroundError` that says what is wrong — never another
exception — and a refused input leaves nothing behind in the database."""

import csv
import io
import json
import math
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bench.load import generate_round, submit_vote
from playground.core.errors import PlaygroundError
from playground.data.exchange import import_file
from playground.data.rows import ROLES, parse_row
from playground.data.store import Store, open_store
from playground.data.votes import OUTCOMES, Response, Vote
from playground.inference.settings import GenerationSettings
from playground.scoring.rounds import SCORE_FIELDS, Round, chat_messages, make_vote
from playground.scoring.scorer import ResponseScore

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """`valid` three times in four: a vote is only accepted when every field is, so uniform
    hostility would leave the accepting path (and the store round trip) almost untested."""
    # (Not st.integers(0, 3): Hypothesis favours boundary values, so 0 would come far too often.)
    return st.sampled_from((True, True, True, False)).flatmap(lambda ok: valid if ok else hostile)


# Text people paste: right-to-left marks and scripts, zero-width joiners and spaces, a byte-order
# mark, emoji sequences, combining marks, control characters, blanks.
ODD = ["\u202e", "\u202d", "\u200f", "\u200b", "\u200d", "\u2060", "\ufeff", "👩‍👩‍👧", "🏳️‍🌈", "e\u0301",
       "שלום", "مرحبا", "\x00", "\x1b[31m", "\n", "\t", " ", "\u3000", "\U0010ffff"]
odd_text = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(ODD)), max_size=6).map("".join)
# Large enough to cross SQLite's page size and Python's small-string paths, small enough to stay quick.
huge_text = st.integers(10_000, 200_000).flatmap(lambda n: st.sampled_from(["x", "é", "🙂", " "]).map(lambda c: c * n))
any_text = st.one_of(odd_text, huge_text)
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_text)
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)),
    max_leaves=10,
)
message = st.one_of(
    st.fixed_dictionaries({"role": st.one_of(st.sampled_from(ROLES), odd_text), "content": any_text}),
    st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": json_values},
                          optional={"name": json_values, "extra": json_values}),
    json_values,
)
messages = st.lists(message, max_size=4)
# A row's field: well-formed or nearly, or anything at all.
row_field = st.one_of(any_text, messages, json_values)
record = st.one_of(
    st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "score", "id"]), row_field, max_size=5),
    st.fixed_dictionaries({"prompt": row_field, "chosen": row_field, "rejected": row_field},
                          optional={"score": json_values}),
    json_values,
)
nonblank = st.tuples(st.sampled_from(["A", "ok", "שלום", "🙂"]), any_text).map("".join)
good_record = st.one_of(
    st.fixed_dictionaries({"prompt": nonblank, "chosen": nonblank, "rejected": nonblank},
                          optional={"score": json_values, "source": odd_text}),
    st.fixed_dictionaries({
        "prompt": st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": any_text}),
                           min_size=1, max_size=2),
        "chosen": st.tuples(nonblank).map(lambda t: [{"role": "assistant", "content": t[0]}]),
        "rejected": st.tuples(nonblank).map(lambda t: [{"role": "assistant", "content": t[0]}]),
    }),
)
# Half an emoji, as a JSON "\ud83d" escape spells it: valid JSON, not text; never stored.
surrogate_record = st.one_of(good_record.map(lambda r: {**r, "note": "half \ud83d an emoji"}),
                             st.just({"prompt": "p\ud800", "chosen": "c", "rejected": "r"}))
# Lines JSON's own parser chokes on in ways other than a syntax error.
NASTY_LINES = ["1" * 5000, '{"prompt": "p", "chosen": "c", "rejected": "r", "n": ' + "9" * 5000 + "}",
               "[" * 100_000, '{"a": ' * 50_000, "NaN", '"\\ud800"', "\x00", "{}", "[]", "null"]
line = st.one_of(
    good_record.map(json.dumps),
    good_record.map(json.dumps),
    surrogate_record.map(json.dumps),
    record.map(json.dumps),  # ensure_ascii: a lone surrogate travels as a \\udXXX escape, as JSON allows
    record.map(lambda r: json.dumps(r, ensure_ascii=False, allow_nan=True).encode("utf-8", "replace").decode()),
    st.sampled_from(NASTY_LINES),
    odd_text.filter(lambda s: "\n" not in s and "\r" not in s),
)
VALID_ROW = {"prompt": "Why is the sky blue?", "chosen": "Rayleigh scattering.", "rejected": "Because."}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One database for the whole module, unlike conftest's `store` (one per test): hypothesis runs
    many examples inside one test call and refuses function-scoped fixtures there, and refused
    imports must not add to what the examples before them stored."""
    with open_store(tmp_path_factory.mktemp("props") / "votes.sqlite") as s:
        yield s


def _pair_count(store: Store) -> int:
    db = sqlite3.connect(store.database.path)
    try:
        return db.execute("SELECT COUNT(*) FROM imported_pairs").fetchone()[0]
    finally:
        db.close()


def _parses(text: str) -> bool:
    try:
        parse_row(json.loads(text), 1)
    except (PlaygroundError, ValueError, RecursionError):
        return False
    return True


@PROPERTY
@given(lines=st.lists(line, max_size=6), skip_invalid=st.booleans(),
       tail=st.one_of(st.just(b""), st.binary(min_size=1, max_size=64)))
@example(lines=[json.dumps(VALID_ROW), NASTY_LINES[1]], skip_invalid=False, tail=b"")
@example(lines=[json.dumps(VALID_ROW), "[" * 100_000], skip_invalid=True, tail=b"")
@example(lines=[json.dumps(VALID_ROW)], skip_invalid=False, tail=b"\xff\xfe not utf-8")
def test_importing_any_file_imports_all_valid_rows_or_nothing(
        shared_store: Store, tmp_path_factory: pytest.TempPathFactory, lines: list[str], skip_invalid: bool, tail: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / f"import-{uuid.uuid4().hex}.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + tail)
    before = _pair_count(shared_store)
    try:
        result = import_file(shared_store, path, skip_invalid=skip_invalid)
    except PlaygroundError as exc:
        event("refused")  # the statistics show both outcomes are exercised
        assert str(exc).strip()
        assert _pair_count(shared_store) == before  # all or nothing
        return
    finally:
        path.unlink()
    assert _pair_count(shared_store) == before + result.imported
    if tail:  # random bytes make a last line of their own: only the bookkeeping above is predictable
        return
    rows = [text for text in lines if text.strip()]
    valid = [text for text in rows if _parses(text)]
    assert result.imported == len(valid) > 0
    assert len(result.skipped) == len(rows) - len(valid)
    if not skip_invalid:
        assert result.skipped == []
    stored = shared_store.imports.pairs()[before:]
    assert [r.as_trl() for r in stored] == [parse_row(json.loads(t), 1).as_trl() for t in valid]
    for row in stored:  # whatever was let in can be exported (a UTF-8 file) and tokenized
        json.dumps(row.as_trl(), ensure_ascii=False, default=str).encode("utf-8")


TRL_COLUMNS = ("prompt", "chosen", "rejected")


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _parquet_bytes(columns: dict[str, list[str]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


csv_cell = st.one_of(any_text, messages.map(json.dumps), st.just("[not json"), st.just("[" * 5000))
csv_file = st.tuples(
    st.one_of(st.just(list(TRL_COLUMNS)), st.lists(odd_text, max_size=4)),
    st.lists(mostly(st.lists(nonblank.map(lambda t: t.replace("\x00", "")), min_size=3, max_size=3),
                    st.lists(csv_cell, max_size=4)), max_size=4),
).map(lambda hr: _csv_text(*hr).encode("utf-8", "surrogatepass"))
parquet_file = st.lists(st.tuples(mostly(nonblank, odd_text), nonblank, nonblank), max_size=4).map(
    lambda rows: _parquet_bytes({name: [r[i] for r in rows] for i, name in enumerate(TRL_COLUMNS)}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from([".csv", ".parquet", ".json"]), data=st.data(),
       tail=st.one_of(st.just(b""), st.binary(min_size=1, max_size=32)))
@example(kind=".csv", data=None, tail=b"\xff\xfe")
def test_csv_parquet_and_junk_files_import_or_explain(shared_store: Store, tmp_path_factory: pytest.TempPathFactory,
                                                      kind: str, data: Any, tail: bytes) -> None:
    content = {".csv": csv_file, ".parquet": parquet_file, ".json": st.binary(max_size=200)}[kind]
    body = _csv_text(list(TRL_COLUMNS), [["a", "b", "c"]]).encode() if data is None \
        else data.draw(content)
    path = tmp_path_factory.getbasetemp() / f"import-{uuid.uuid4().hex}{kind}"
    path.write_bytes(body + tail)
    before = _pair_count(shared_store)
    try:
        result = import_file(shared_store, path)
    except PlaygroundError as exc:
        event("refused")  # the statistics show both outcomes are exercised
        assert str(exc).strip()
        assert _pair_count(shared_store) == before
    else:
        assert result.imported > 0 and _pair_count(shared_store) == before + result.imported
    finally:
        path.unlink()


@PROPERTY
@given(value=st.one_of(good_record, surrogate_record, record), line_no=st.integers(-5, 10**9))
def test_parse_row_accepts_or_explains(value: Any, line_no: int) -> None:
    try:
        row = parse_row(value, line_no)
    except PlaygroundError as exc:
        event("refused")  # the statistics show both outcomes are exercised
        assert str(exc).strip()
        return
    event("accepted")
    for text in (row.chosen, row.rejected):
        assert (text if isinstance(text, str) else "".join(m["content"] for m in text)).strip()
    json.dumps(row.as_trl(), ensure_ascii=False, default=str).encode("utf-8")  # no lone surrogates


# The vote path --------------------------------------------------------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False)
score_number = mostly(st.one_of(finite, st.integers(-(2**40), 2**40)), st.floats(allow_nan=True, allow_infinity=True))
# Model names and response texts go to SQLite as TEXT, which cannot hold lone surrogates; those are
# covered by their own test below.
model_name = mostly(st.sampled_from(["policy", "sft", "reference", "dpo-20260101-000000-abcdef", "ckpt \u202e🙂"]),
                    odd_text)
score_dict = mostly(st.dictionaries(odd_text, score_number, max_size=4),
                    st.dictionaries(st.one_of(odd_text, st.integers()), st.one_of(numbers, st.booleans(), odd_text),
                                    max_size=4))
response_args = mostly(
    st.tuples(model_name, any_text, score_dict),
    st.tuples(mostly(model_name, scalars), mostly(any_text, scalars), mostly(score_dict, json_values)),
)
good_prompt = st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": any_text}),
                       min_size=1, max_size=3)
settings_value = mostly(st.dictionaries(odd_text, json_values, max_size=5), json_values)
printable = st.text(st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), min_size=1, max_size=64)
voter = mostly(st.one_of(printable.filter(str.strip), st.sampled_from(["ana", " bo ", "x" * 64, "李 🙂"])),
               st.one_of(odd_text, st.just("x" * 65), scalars))
created_at = mostly(st.floats(0, 4e9), st.one_of(st.floats(), st.integers(0, 2**31), st.booleans(), st.none(),
                                                 odd_text))
hostile_ranking = st.one_of(st.none(), st.lists(st.one_of(st.integers(-3, 6), st.booleans(), st.floats(), odd_text),
                                                max_size=5))


def outcome_and_ranking(data: st.DataObject, k: int) -> tuple[Any, Any]:
    """Mostly an outcome that fits k responses (with a full ranking when it is one), else anything."""
    fitting = st.sampled_from(OUTCOMES if k == 2 else ("ranking",))
    outcome = data.draw(mostly(fitting, st.one_of(st.sampled_from(OUTCOMES), odd_text, scalars)), label="outcome")
    fitting_ranking = st.permutations(range(k)) if outcome == "ranking" else st.none()
    return outcome, data.draw(mostly(fitting_ranking, hostile_ranking), label="ranking")


def _round_trips(store: Store, vote: Vote) -> None:
    vote_id = store.votes.add(vote)
    assert store.votes.list()[-1] == replace(vote, id=vote_id)  # the newest: this one


@PROPERTY
@given(data=st.data(), prompt=mostly(good_prompt, st.one_of(messages, json_values)),
       responses=mostly(st.integers(2, 4), st.sampled_from([0, 1, 5])).flatmap(
           lambda k: st.lists(response_args, min_size=k, max_size=k)),
       voter=voter, settings_=settings_value, anonymous=mostly(st.booleans(), scalars), created_at=created_at)
def test_a_vote_is_valid_and_round_trips_or_is_refused_with_a_message(
        shared_store: Store, data: st.DataObject, prompt: Any, responses: list[tuple], voter: Any, settings_: Any,
        anonymous: Any, created_at: Any) -> None:
    outcome, ranking = outcome_and_ranking(data, len(responses))
    try:
        vote = Vote(prompt=prompt, responses=tuple(Response(*args) for args in responses), outcome=outcome,
                    ranking=ranking, voter=voter, settings=settings_, anonymous=anonymous, created_at=created_at)
    except PlaygroundError as exc:
        event("refused")  # the statistics show both outcomes are exercised
        assert str(exc).strip()
        return
    event("stored")
    _round_trips(shared_store, vote)


@st.composite
def scored_round(draw: st.DrawFn) -> Round:
    """A round as the UI holds it after scoring; k is sometimes out of range (1 or 5)."""
    k = draw(mostly(st.integers(2, 4), st.sampled_from([1, 5])))
    scores = tuple(ResponseScore(**{f: draw(score_number) for f in SCORE_FIELDS}, token_log_ratios=(),
                                 token_logps_policy=(), token_ids=(), truncated=False) for _ in range(k))
    return Round(messages=tuple(draw(good_prompt)), models=tuple(draw(st.lists(model_name, min_size=k, max_size=k))),
                 settings=GenerationSettings(seed=draw(st.integers(0, 2**63 - 1))),
                 beta=draw(mostly(st.floats(1e-6, 10), st.floats(allow_nan=True, allow_infinity=True))),
                 anonymous=draw(st.booleans()), rated_as=tuple(draw(st.lists(model_name, max_size=k))),
                 texts=tuple(draw(st.lists(any_text, min_size=k, max_size=k))), scores=scores)


@PROPERTY
@given(data=st.data(), rnd=scored_round(), voter=voter)
def test_make_vote_gives_a_storable_vote_or_a_message(shared_store: Store, data: st.DataObject, rnd: Round,
                                                      voter: Any) -> None:
    outcome, ranking = outcome_and_ranking(data, rnd.k)
    try:
        vote = make_vote(rnd, outcome, voter, ranking)
    except PlaygroundError as exc:
        event("refused")  # the statistics show both outcomes are exercised
        assert str(exc).strip()
        return
    event("stored")
    assert vote.outcome == outcome and len(vote.responses) == rnd.k
    assert [r.text for r in vote.responses] == list(rnd.texts)
    _round_trips(shared_store, vote)


@pytest.mark.parametrize("where", ["model", "text"])
def test_a_lone_surrogate_in_a_response_is_refused_not_a_crash(shared_store: Store, where: str) -> None:
    """Python strings can hold lone surrogates (from a JSON "\\ud800" escape, say); SQLite TEXT
    cannot. A vote holding one must be refused with a message, not fail inside the store."""
    bad = {"model": "policy", "text": "fine", where: "broken \ud800 text"}
    before = len(shared_store.votes.list())
    with pytest.raises(PlaygroundError, match="holds a lone surrogate"):
        shared_store.votes.add(Vote(prompt=[{"role": "user", "content": "Hi"}], outcome="a", voter="ana",
                                    responses=(Response(**bad), Response("sft", "ok"))))
    assert len(shared_store.votes.list()) == before


@pytest.mark.parametrize(("prompt", "system"), [("hi \ud800", ""), ("hi", "be \udfff brief")],
                         ids=["prompt", "system"])
def test_a_lone_surrogate_in_a_prompt_is_refused_before_generation(prompt: str, system: str) -> None:
    """A browser's JSON.stringify writes a lone surrogate as a "\\ud800" escape, so /generate can
    receive one; the tokenizer then fails with a TypeError. It must be refused as bad input."""
    with pytest.raises(PlaygroundError):
        chat_messages(prompt, system)


# Generation settings --------------------------------------------------------------------------------
LIMITS = {  # field: (what the message calls it, is the value allowed)
    "temperature": ("temperature", lambda v: 0 <= v <= 5),
    "top_p": ("top-p", lambda v: 0 < v <= 1),
    "top_k": ("top-k", lambda v: 0 <= v <= 10_000),
    "max_new_tokens": ("max new tokens", lambda v: 1 <= v <= 2048),
    "repetition_penalty": ("repetition penalty", lambda v: 0.5 <= v <= 5),
    "seed": ("seed", lambda v: 0 <= v < 2**63),
}
setting_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**80), 2**80),
    st.sampled_from([0, 1, 5, 0.5, 2048, 2049, 10_000, 10_001, 2**63 - 1, 2**63, -0.0, 5e-324, 1e308]),
)


@PROPERTY
@given(values=st.fixed_dictionaries({name: setting_number for name in LIMITS}))
def test_generation_settings_are_valid_or_name_every_problem(values: dict[str, Any]) -> None:
    bad = [label for name, (label, ok) in LIMITS.items()
           if (isinstance(values[name], float) and math.isnan(values[name])) or not ok(values[name])]
    try:
        GenerationSettings(**values).validate()
    except PlaygroundError as exc:
        message = str(exc)
        assert bad, f"refused valid settings: {message}"
        for label in bad:
            assert label in message
        assert message.count(";") == len(bad) - 1  # one clause per problem, nothing else
        return
    assert not bad, f"accepted {bad}"


# Through the API ------------------------------------------------------------------------------------
HOSTILE_VOTES = [  # outcome, ranking, voter name, what the refusal says
    ("", [], "ana", "outcome '' is not one of"),
    ("A" * 10_000, [], "ana", "is not one of"),
    ("winner", [], "ana", "is not one of"),
    ("ranking", ["A", "A"], "ana", "Rank all 2 responses"),
    ("ranking", ["B"], "ana", "Rank all 2 responses"),
    ("ranking", [], "ana", "Rank all 2 responses"),
    ("ranking", ["C", "A"], "ana", "Rank all 2 responses"),
    ("ranking", ["Z"], "ana", "not in the list of choices"),  # the widget's own check
    ("a", [], "", "voter name is empty"),
    ("a", [], None, "voter name is empty"),
    ("a", [], " \u200b ", "voter name"),
    ("a", [], "\u202eeve\n", "control characters"),
    ("a", [], "x" * 65, "at most 64"),
    ("tie", [], "\x00", "control characters"),
]


@pytest.fixture
def app(tiny_app: tuple) -> tuple:
    return tiny_app


def test_hostile_votes_through_the_api_are_refused_with_a_message_and_store_nothing(app: tuple) -> None:
    state, client = app
    with pytest.raises(Exception, match="generate responses first"):
        client.predict("a", [], "ana", api_name="/vote")
    generate_round(client, seed=0, timeout=60)
    for outcome_, ranked, name, says in HOSTILE_VOTES:
        with pytest.raises(Exception) as refused:
            client.predict(outcome_, ranked, name, api_name="/vote")
        assert says in str(refused.value), (outcome_[:20], ranked, name, str(refused.value)[:300])
        assert state.store.votes.list() == []
    # The round survived all of that: a proper vote is stored, once.
    vote_id = submit_vote(client, "b", "ana", timeout=60)
    assert [(v.id, v.outcome, v.voter) for v in state.store.votes.list()] == [(vote_id, "b", "ana")]
