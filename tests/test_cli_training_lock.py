"""`playground train` (both engines) and `playground rlhf` hold the vote database's training lock for
their run, as the app's runs do: beside a run of an app replica or another command they are refused
with the app's own message, and under accelerate launch only the main process takes the lock."""

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.common import run_cli, training_lock
from cli.reward_model import main as reward_model_main
from cli.rlhf import main as rlhf_main
from cli.train import main as train_main
from playground.core.errors import PlaygroundError
from playground.data.db import TrainingLock
from playground.data.store import open_store
from service import training
from tests.test_dpo import separable_pairs


@pytest.fixture
def held(tiny_state) -> Iterator[tuple[Path, TrainingLock]]:
    """An app's vote database (the tiny app's), its training lock held by another handle: a run of
    another replica or command."""
    db = tiny_state.data_dir / "votes.sqlite"
    with open_store(db) as other:
        lock = other.database.training_lock()
        assert lock.acquire()
        yield db, lock
        lock.release()


def exit_of(main: Callable[[], int], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run_cli(main)
    return exited.value.code, capsys.readouterr().err.strip()


def pairs_file(tmp_path: Path) -> Path:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r.as_trl()) + "\n" for r in separable_pairs()))
    return data


@pytest.mark.parametrize("engine", ["ours", "trl"])
def test_train_is_refused_with_the_apps_message_while_another_run_holds_the_lock(
        engine: str, held: tuple[Path, TrainingLock], tiny_state, tiny_model_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db, lock = held
    app_says = training.busy(tiny_state)  # what the app's Train button answers now
    holder = lock.holder()
    assert holder is not None and app_says == holder.refusal()
    out = tmp_path / "ckpts"
    code, err = exit_of(lambda: train_main(["--pairs", str(pairs_file(tmp_path)), "--out", str(out), "--sft",
                                            str(tiny_model_dir), "--steps", "1", "--engine", engine, "--db", str(db)]),
                        capsys)
    assert (code, err) == (1, f"error: {app_says}")
    assert not out.exists()


def test_rlhf_is_refused_with_the_apps_message_while_another_run_holds_the_lock(
        held: tuple[Path, TrainingLock], tiny_state, tiny_model_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = held
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n')
    code, err = exit_of(lambda: rlhf_main(["--prompts", str(prompts), "--reward-model", str(tmp_path / "rm"),
                                           "--out", str(tmp_path / "ckpts"), "--sft", str(tiny_model_dir),
                                           "--db", str(db)]), capsys)
    assert (code, err) == (1, f"error: {training.busy(tiny_state)}")


def test_reward_model_is_refused_with_the_apps_message_while_another_run_holds_the_lock(
        held: tuple[Path, TrainingLock], tiny_state, tiny_model_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = held
    out = tmp_path / "rm"
    code, err = exit_of(lambda: reward_model_main(["--pairs", str(pairs_file(tmp_path)), "--out", str(out), "--sft",
                                                   str(tiny_model_dir), "--steps", "1", "--db", str(db)]), capsys)
    assert (code, err) == (1, f"error: {training.busy(tiny_state)}")
    assert not out.exists()


def test_train_holds_the_lock_while_it_trains_and_lets_go_after(
        tiny_state, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import playground.training.dpo as dpo

    db = tiny_state.data_dir / "votes.sqlite"
    seen = []

    def train_watched(*args, **kwargs):
        seen.append(training.busy(tiny_state))  # the app, asked mid-run, is refused
        return real(*args, **kwargs)

    real = dpo.train_dpo
    monkeypatch.setattr(dpo, "train_dpo", train_watched)
    code, err = exit_of(lambda: train_main(["--pairs", str(pairs_file(tmp_path)), "--out", str(tmp_path / "ckpts"),
                                            "--sft", str(tiny_model_dir), "--steps", "1", "--db", str(db)]), capsys)
    assert code == 0, err
    assert len(seen) == 1 and seen[0].startswith(f"training refused: replica {socket.gethostname()}:{os.getpid()} ")
    assert tiny_state.training.acquire()  # let go when the run ended
    tiny_state.training.release()


def test_only_the_main_process_of_a_launch_takes_the_lock(held: tuple[Path, TrainingLock]) -> None:
    db, _ = held
    with training_lock(str(db), take=False):  # another process of the launch: its main holds the lock
        pass
    with pytest.raises(PlaygroundError, match="training refused: replica"), training_lock(str(db)):
        pass
