"""Export and import: the shared functions in-process, and `playground data` end to end."""

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.data import build_parser
from evals.battles import read_battles
from evals.ratings.indexed import index_battles
from playground.core.errors import PlaygroundError
from playground.data.exchange import export_rows, import_file
from playground.data.rows import PreferenceRow
from playground.data.store import Store, open_store
from playground.data.votes import to_arena_rows
from tests.conftest import make_vote

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Sky colour?"}]

STANDARD = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome"}]
CONVERSATIONAL = [{"prompt": [{"role": "user", "content": "hi"}],
                   "chosen": [{"role": "assistant", "content": "hello"}],
                   "rejected": [{"role": "assistant", "content": "go away"}]}]
IMPLICIT = [{"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "meh"}]}]
EXPECTED = {
    "standard": [PreferenceRow("2+2?", "4", "5"), PreferenceRow("Capital of France?", "Paris", "Rome")],
    "conversational": [PreferenceRow([{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "hello"}],
                                     [{"role": "assistant", "content": "go away"}])],
    "implicit": [PreferenceRow([{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "hello"}],
                               [{"role": "assistant", "content": "meh"}])],
}
RECORDS = {"standard": STANDARD, "conversational": CONVERSATIONAL, "implicit": IMPLICIT}


def write_records(records: list[dict[str, Any]], path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:  # CSV: message lists as JSON text, as rows.read_records expects
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows({k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()} for r in records)
    return path


def run_data(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process; PLAYGROUND_HOME comes from the `home` fixture's environment."""
    return subprocess.run([sys.executable, "-m", "cli", "data", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def add_votes(store: Store) -> None:
    """ana prefers b, bob ties, ana ranks three anonymously; the first response says blue, the others green."""
    for models, fields in [(("sft", "policy"), {"outcome": "b", "created_at": 10.0}),
                           (("sft", "policy"), {"outcome": "tie", "voter": "bob", "created_at": 20.0}),
                           (("sft", "policy", "ckpt-0001"),
                            {"outcome": "ranking", "ranking": (2, 0, 1), "anonymous": True, "created_at": 30.0})]:
        store.votes.add(make_vote(models, texts=[f"{m}: {'green' if i else 'blue'}" for i, m in enumerate(models)],
                                  scores=[{"reward": float(i)} for i in range(len(models))], prompt=PROMPT, **fields))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["standard", "conversational", "implicit"])
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_import_each_format_and_kind(store: Store, tmp_path: Path, kind: str, suffix: str) -> None:
    path = write_records(RECORDS[kind], tmp_path / f"{kind}{suffix}")
    result = import_file(store, path)
    assert (result.imported, result.skipped) == (len(EXPECTED[kind]), [])
    assert store.imports.pairs() == EXPECTED[kind]


def test_import_is_all_or_nothing_and_names_the_line(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\nnot json\n')
    with pytest.raises(PlaygroundError) as caught:
        import_file(store, path)
    assert "2 invalid row(s), nothing was read" in str(caught.value)
    assert "line 2: missing 'rejected'" in str(caught.value)
    assert "line 3: not valid JSON" in str(caught.value)
    assert store.imports.pairs() == []

    result = import_file(store, path, skip_invalid=True)
    assert result.imported == 1
    assert [e.line for e in result.skipped] == [2, 3]
    assert store.imports.pairs() == [PreferenceRow("a", "b", "c")]


def test_import_of_only_invalid_rows_is_an_error_even_when_skipping(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n')
    with pytest.raises(PlaygroundError, match=r"no valid rows to import \(1 invalid\)"):
        import_file(store, path, skip_invalid=True)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_trl_export_loads_with_datasets(store: Store, tmp_path: Path, suffix: str) -> None:
    import datasets

    add_votes(store)
    out = tmp_path / f"trl{suffix}"
    assert export_rows(store, "trl", out, "all_pairs", 0) == 4  # b, then the ranking's 3 pairs; the tie gives none
    ds = datasets.load_dataset(suffix.lstrip(".").replace("jsonl", "json"), data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    assert ds.num_rows == 4
    # Message lists stay lists of {role, content}: what TRL takes for conversational data.
    assert ds[0]["prompt"] == PROMPT
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "policy: green"}]
    assert ds[0]["rejected"] == [{"role": "assistant", "content": "sft: blue"}]
    assert [(r["chosen_model"], r["rejected_model"]) for r in ds] == [
        ("policy", "sft"), ("ckpt-0001", "sft"), ("ckpt-0001", "policy"), ("sft", "policy")]
    assert not list(tmp_path.glob(".*.tmp"))

    # And the file imports back as the same pairs.
    with open_store(tmp_path / "again.sqlite") as again:
        assert import_file(again, out).imported == 4
        assert again.imports.pairs() == store.training_pairs("all_pairs", 0)


def test_best_vs_random_export(store: Store, tmp_path: Path) -> None:
    add_votes(store)
    out = tmp_path / "best.jsonl"
    assert export_rows(store, "trl", out, "best_vs_random", 3) == 2
    rows = read_jsonl(out)
    assert rows[1]["chosen_model"] == "ckpt-0001"
    assert rows[1]["rejected_model"] in ("sft", "policy")
    export_rows(store, "trl", tmp_path / "again.jsonl", "best_vs_random", 3)
    assert read_jsonl(tmp_path / "again.jsonl") == rows


def test_arena_export(store: Store, tmp_path: Path) -> None:
    add_votes(store)
    assert export_rows(store, "arena", tmp_path / "arena.jsonl") == 5
    rows = read_jsonl(tmp_path / "arena.jsonl")
    assert [{k: v for k, v in r.items() if k != "conv_metadata"} for r in rows] == to_arena_rows(store.votes.list())
    assert [(r["model_a"], r["model_b"], r["winner"]) for r in rows] == [
        ("sft", "policy", "model_b"), ("sft", "policy", "tie"),
        ("sft", "policy", "model_a"), ("sft", "ckpt-0001", "model_b"), ("policy", "ckpt-0001", "model_b"),
    ]
    assert export_rows(store, "arena", tmp_path / "arena.parquet") == 5
    assert pq.read_table(tmp_path / "arena.parquet").to_pylist() == rows
    # The ranking's three battles share its vote_id, so the ratings resample them as one vote.
    assert [r["vote_id"] for r in rows] == [1, 2, 3, 3, 3]
    assert index_battles(read_battles(tmp_path / "arena.parquet")).n_votes == 3


def test_export_refusals(store: Store, tmp_path: Path) -> None:
    with pytest.raises(PlaygroundError, match="nothing to export"):
        export_rows(store, "trl", tmp_path / "out.jsonl")
    add_votes(store)
    with pytest.raises(PlaygroundError, match=r"must end in \.jsonl or \.parquet"):
        export_rows(store, "trl", tmp_path / "out.csv")
    with pytest.raises(PlaygroundError, match="no such folder"):
        export_rows(store, "trl", tmp_path / "missing" / "out.jsonl")
    with pytest.raises(PlaygroundError, match="only be exported in trl format"):
        export_rows(store, "arena", tmp_path / "out.jsonl", include_imported=True)
    store.imports.add_pairs(EXPECTED["standard"], "plain.jsonl")
    with pytest.raises(PlaygroundError, match="mix plain-text and chat-message prompts"):
        export_rows(store, "trl", tmp_path / "out.jsonl", include_imported=True)
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".*.tmp"))


def test_failed_export_leaves_the_old_file(store: Store, tmp_path: Path) -> None:
    # Two imported pairs whose "score" is a number in one and text in the other fit no Parquet column.
    store.imports.add_pairs(
        [PreferenceRow("q", "y", "n", {"score": 0.5}), PreferenceRow("q", "y", "n", {"score": "high"})], "mixed.jsonl")
    out = tmp_path / "out.parquet"
    out.write_bytes(b"previous export")
    with pytest.raises(PlaygroundError, match="do not fit one Parquet schema"):
        export_rows(store, "trl", out, include_imported=True)
    assert out.read_bytes() == b"previous export"
    assert not list(tmp_path.glob(".*.tmp"))
    assert export_rows(store, "trl", tmp_path / "out.jsonl", include_imported=True) == 2  # JSON lines take it


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for command, flags in (("export", ["--format", "--out", "--binarize", "--seed", "--include-imported", "--db"]),
                           ("import", ["FILE", "--skip-invalid", "--db"])):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = capsys.readouterr().out
        for flag in flags:
            assert flag in text


@pytest.mark.slow  # a subprocess CLI
def test_cli_export_then_import_round_trip(home: Path, tmp_path: Path) -> None:
    with open_store(home / "votes.sqlite") as s:
        add_votes(s)
        s.imports.add_pairs(EXPECTED["conversational"], "extra.jsonl")
        expected = s.training_pairs("all_pairs", 0)
    out = tmp_path / "export.jsonl"

    done = run_data("export", "--format", "trl", "--out", str(out), "--include-imported")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"wrote 5 trl rows to {out}\n"
    assert read_jsonl(out) == [p.as_trl() for p in expected]

    other = tmp_path / "other.sqlite"
    done = run_data("import", str(out), "--db", str(other))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"imported 5 preference rows from {out}\n"
    with open_store(other) as s:
        assert s.imports.pairs() == expected


@pytest.mark.slow  # a subprocess CLI
def test_cli_import_of_a_bad_file_writes_nothing(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "", "rejected": "c"}\n')
    done = run_data("import", str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"error: {path}: 1 invalid row(s), nothing was read")
    assert "line 2: 'chosen' is empty" in done.stderr
    assert "Traceback" not in done.stderr
    with open_store(home / "votes.sqlite") as s:
        assert s.imports.pairs() == []


@pytest.mark.slow  # a subprocess CLI
def test_cli_errors_are_one_line(home: Path, tmp_path: Path) -> None:
    done = run_data("export", "--format", "arena", "--out", str(tmp_path / "a.jsonl"))
    assert done.returncode == 1
    db = home / "votes.sqlite"
    assert done.stderr == f"error: {db}: no vote database there (nothing voted yet, or a wrong --db?)\n"
    assert not (tmp_path / "a.jsonl").exists()
