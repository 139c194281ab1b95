"""Prompt-set files: every format, checked line by line, imported all or nothing (API and CLI)."""

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.data import build_parser
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_PROMPT_CHARS
from playground.data.exchange import import_prompts
from playground.data.prompt_sets import MAX_PROMPTS, load_prompt_file, prompts_from_preference_file
from playground.data.store import open_store
from tests.test_data_cli import run_data

ROWS: list[dict[str, Any]] = [
    {"prompt": "Name a prime.", "id": "p1", "category": "math"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]},
    {"prompt": "Capital of France?", "id": 7},
]
MESSAGES = [
    [{"role": "user", "content": "Name a prime."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
    [{"role": "user", "content": "Capital of France?"}],
]


def write(records: list[dict[str, Any]], path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        keys = list(dict.fromkeys(k for r in records for k in r))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows({k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()} for r in records)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_text_and_message_prompts_with_ids_and_categories(tmp_path: Path, suffix: str) -> None:
    prompts = load_prompt_file(write(ROWS, tmp_path / f"set{suffix}"))
    assert [p.messages for p in prompts] == MESSAGES
    # The second row has no id: its line number stands in (CSV counts the header as line 1).
    assert [p.ref for p in prompts] == ["p1", "2" if suffix == ".jsonl" else "3", "7"]
    assert [p.category for p in prompts] == ["math", None, None]


def test_parquet(tmp_path: Path) -> None:
    records = [{"prompt": "a?", "id": 1, "category": "x"}, {"prompt": "b?", "id": 2, "category": None}]
    prompts = load_prompt_file(write(records, tmp_path / "set.parquet"))
    assert [(p.ref, p.messages[0]["content"], p.category) for p in prompts] == [("1", "a?", "x"), ("2", "b?", None)]


def test_every_bad_line_is_listed_and_nothing_is_imported(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        json.dumps({"prompt": "fine", "id": "a"}),
        json.dumps({"id": "b"}),
        "{not json",
        json.dumps({"prompt": "   "}),
        json.dumps({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
        json.dumps({"prompt": "again", "id": "a"}),
        json.dumps({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}),
        json.dumps({"prompt": [{"role": "wizard", "content": "hi"}]}),
        json.dumps({"prompt": "ok", "id": True}),
    ]) + "\n")
    with pytest.raises(PlaygroundError) as caught:
        load_prompt_file(path)
    message = str(caught.value)
    assert "8 invalid row(s), nothing was imported" in message
    for expected in ["line 2: missing 'prompt'", "line 3: not valid JSON", "line 4: 'prompt' is empty",
                     "line 5: the prompt must end with a user message", "line 6: id 'a' is already used on line 1",
                     f"line 7: the prompt is {MAX_PROMPT_CHARS + 1} characters", "line 8: prompt[0] has role 'wizard'",
                     "line 9: 'id' must be a string or a whole number"]:
        assert expected in message
    with open_store(home / "votes.sqlite") as store, pytest.raises(PlaygroundError, match="invalid row"):
        import_prompts(store, path, "bad")
    with open_store(home / "votes.sqlite") as store:
        assert store.prompt_sets.list() == []


def test_too_many_prompts_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(MAX_PROMPTS + 1)))
    with pytest.raises(PlaygroundError, match=f"at most {MAX_PROMPTS} in one set"):
        load_prompt_file(path)


def test_prompts_from_a_preference_file_are_deduplicated(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "category": "math"},
        {"prompt": "2+2?", "chosen": "four", "rejected": "5"},
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
         "rejected": [{"role": "assistant", "content": "no"}]},
    ]))
    prompts = prompts_from_preference_file(path)
    assert [(p.ref, p.messages, p.category) for p in prompts] == [
        ("1", [{"role": "user", "content": "2+2?"}], "math"), ("3", [{"role": "user", "content": "hi"}], None)]


def test_store_keeps_order_and_refuses_a_second_set_of_the_same_name(tmp_path: Path) -> None:
    path = write(ROWS, tmp_path / "set.jsonl")
    with open_store(tmp_path / "votes.sqlite") as store:
        pset = import_prompts(store, path, "  first ", overlap=3)
        assert (pset.name, pset.source, pset.overlap, pset.guidelines, pset.models) == ("first", "set.jsonl", 3, "", ())
        stored = store.prompt_sets.prompts(pset.id)
        assert [(p.position, p.ref, p.messages) for p in stored] == [(0, "p1", MESSAGES[0]), (1, "2", MESSAGES[1]),
                                                                     (2, "7", MESSAGES[2])]
        with pytest.raises(PlaygroundError, match="exists already"):
            import_prompts(store, path, "first")
        with pytest.raises(PlaygroundError, match="overlap 0"):
            import_prompts(store, path, "second", overlap=0)
        with pytest.raises(PlaygroundError, match="needs a name"):
            import_prompts(store, path, " ")
        assert [s.name for s in store.prompt_sets.list()] == ["first"]
        with pytest.raises(PlaygroundError, match="no prompt set named 'nope'; there are: first"):
            store.prompt_sets.get("nope")


def test_cli_imports_a_set_and_reports_bad_lines(home: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write(ROWS, tmp_path / "set.jsonl")
    done = run_data("prompts", str(path), "--name", "eval-1", "--overlap", "2")  # the real entry point, once
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"imported prompt set 'eval-1': 3 prompts from {path}, 2 vote(s) per prompt\n"

    def cli(*argv: str) -> None:  # the rest in-process: a new interpreter costs seconds (torch)
        args = build_parser().parse_args(list(argv))
        args.run(args)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(PlaygroundError, match="line 2: prompt must be a non-empty list"):
        cli("prompts", str(bad), "--name", "eval-2")
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text('{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n')
    cli("prompts", str(prefs), "--name", "from-prefs", "--from-preferences")
    assert "imported prompt set 'from-prefs': 1 prompts" in capsys.readouterr().out
    with open_store(home / "votes.sqlite") as store:
        assert [s.name for s in store.prompt_sets.list()] == ["eval-1", "from-prefs"]
