"""Downloads from the default kind of data directory: one outside the system temp folder and the
checkout (as ~/.cache/preference-playground is), where Gradio serves nothing unless allowed. Every
export through the API returns a file with the right rows, /dashboard writes nothing, and old
exports are pruned."""

import json
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from gradio_client import Client

from playground.models.roles import ModelsConfig
from service.state import KEEP_EXPORTS, AppState, build_state
from tests.conftest import make_vote, running_app

PROMPT = [{"role": "user", "content": "Hi?"}]
# (voter, outcome): 3 votes preferring a response (3 TRL rows), 4 Arena battles, 2 voters.
VOTES = [("ana", "a"), ("ana", "b"), ("ana", "tie"), ("bo", "a")]


def add_votes(state: AppState, votes: list[tuple[str, str]] = VOTES) -> None:
    for k, (voter, outcome) in enumerate(votes):  # distinct answers: a repeat vote would be cleaned away
        state.store.votes.add(make_vote(("policy", "sft"), outcome, texts=(f"short {k}", "longer"),
                                        rated_as=("policy", "sft"), prompt=PROMPT, voter=voter))


@pytest.fixture
def outside_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data directory under ~/.cache, like the default one: in neither the system temp folder nor
    the working directory (the checkout), the two places Gradio serves files from by default."""
    root = (Path.home() / ".cache" / f"pp-test-{secrets.token_hex(4)}").resolve()
    for served in (Path(tempfile.gettempdir()), Path.cwd()):
        assert not root.is_relative_to(served.resolve()), f"{root} is under {served}: the test would prove nothing"
    root.mkdir(parents=True)
    monkeypatch.setenv("PLAYGROUND_HOME", str(root))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def outside_state(tiny_model_dir: Path, outside_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[AppState]:
    """An AppState on the tiny model whose data directory is `outside_home`, with `VOTES` stored."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    state = build_state(ModelsConfig(sft=str(tiny_model_dir)), outside_home)
    add_votes(state)
    yield state
    state.store.close()


def jsonl_rows(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_every_api_export_returns_a_file_from_a_data_directory_outside_temp(outside_state: AppState) -> None:
    state = outside_state
    with running_app(state) as client:
        trl, message = client.predict("trl", "all_pairs", ".jsonl", False, api_name="/export")
        rows = jsonl_rows(trl)
        assert len(rows) == 3 and {"prompt", "chosen", "rejected"} <= set(rows[0]) and "Exported 3 trl rows" in message
        arena, _ = client.predict("arena", "all_pairs", ".jsonl", False, api_name="/export")
        assert [r["winner"] for r in jsonl_rows(arena)] == ["model_a", "model_b", "tie", "model_a"]
        parquet, _ = client.predict("trl", "all_pairs", ".parquet", False, api_name="/export")
        assert len(pd.read_parquet(parquet)) == 3
        merged, _ = client.predict("trl", "drop", api_name="/export_merged")
        assert len(jsonl_rows(merged)) == 3  # playground votes pass through the merge unchanged

        before = sorted(p.name for p in state.export_dir.iterdir())
        summary = client.predict(True, [], "sft", "sft", 50, None, api_name="/dashboard")[0]
        assert "4 battles among 2 models" in summary
        assert sorted(p.name for p in state.export_dir.iterdir()) == before  # viewing writes nothing
        archive = client.predict(True, [], "sft", "sft", 50, None, api_name="/dashboard_tables")
        with zipfile.ZipFile(archive) as z:
            leaderboard = pd.read_csv(z.open("leaderboard.csv"))
            assert sorted(leaderboard["model"]) == ["policy", "sft"]
            assert json.loads(z.read("ratings.json"))["models"]["sft"]["rating"] == 1000.0
    written = sorted(p.name for p in state.export_dir.iterdir() if not p.name.endswith(".meta.json"))
    assert [name.split("-2")[0] for name in written] == ["arena", "dashboard", "trl", "trl", "trl-merged"]


def test_without_the_allowed_export_folder_the_download_fails_with_its_message(outside_state: AppState) -> None:
    """The bug this guards against, shown to be real in this set-up: with the export folder not
    allowed, Gradio refuses the file, and the caller sees the reason rather than a bare "Error"."""
    from ui.app import build_demo, launch_kwargs

    demo = build_demo(outside_state)
    kwargs = {k: v for k, v in launch_kwargs(outside_state).items() if k != "allowed_paths"}
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **kwargs)
    client = Client(demo.local_url, verbose=False)
    try:
        with pytest.raises(Exception, match=r"Cannot move .*exports"):
            client.predict("trl", "all_pairs", ".jsonl", False, api_name="/export")
    finally:
        client.close()
        demo.close()


def test_exports_are_pruned_to_the_newest_of_each_kind(tiny_state: AppState) -> None:
    state = tiny_state
    old = state.export_dir / "trl-20200101-000000"  # an old-style folder of tables, and a sidecar file
    old.mkdir(parents=True)
    (state.export_dir / "trl-20200101-000000.jsonl.meta.json").write_text("{}")
    (state.export_dir / "notes.txt").write_text("not an export")
    paths = []
    for _ in range(KEEP_EXPORTS + 5):
        paths.append(state.export_path("trl", ".jsonl"))
        paths[-1].write_text("row\n")
    other = state.export_path("trl-merged", ".jsonl")
    other.write_text("row\n")
    left = {p.name for p in state.export_dir.iterdir()}
    trl = {name for name in left if name.startswith("trl-2")}
    assert len(trl) == KEEP_EXPORTS and paths[-1].name in trl  # the newest kept, the old folder and sidecar gone
    assert len(set(paths)) == len(paths)  # two exports in one second get different names
    assert {other.name, "notes.txt"} <= left and "trl-20200101-000000" not in left
