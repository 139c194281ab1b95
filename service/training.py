"""Training actions on a running app's state: a DPO run on the stored votes (progress events, the
new checkpoint registered and serving), cancel, serving another checkpoint, the checkpoint table,
and reward models. The Train and Dashboard tabs, a gradio_client user and a script call these
same functions.

One run at a time, DPO or reward model: `state.training` is held from `start_training` (or
`train_reward_model`) until the run has ended, whichever way it ends; `cancel_training` sets
`state.cancel_training`, which the run reads before each step. A failed or cancelled run leaves
the serving policy bit-identical and writes nothing.
"""

import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from playground.core.errors import PlaygroundError
from playground.data.merge import merge_votes
from playground.data.rows import PreferenceRow, UnpairedRow
from playground.models.checkpoints import CheckpointRecord, HeldOut, set_policy_weights
from playground.models.roles import adapter_params
from playground.training.dpo import DPOConfig, TrainResult, loss_label, train_dpo
from playground.training.loop import Callback, Metrics
from playground.training.reward_model import RECORD as REWARD_RECORD
from playground.training.reward_model import RewardConfig, RewardTrainResult
from playground.training.reward_model import train_reward_model as train_reward_model_on
from service.cleaning import vote_flags
from service.state import AppState

BUSY = "a training run is already in progress; wait for it or cancel it"
NO_CHECKPOINTS = "No checkpoints yet — vote on the Playground tab, then Train"
TRAIN_TABLE_COLUMNS = ["checkpoint", "serving", "parent", "loss", "pairs", "steps", "held-out acc before→after",
                      "held-out margin after", "β", "created"]


@dataclass(frozen=True)
class StepEvent:
    """One optimizer step of a running DPO run."""

    step: int
    total: int
    metrics: Metrics


_END = object()  # the worker's last item on the event queue


class TrainingRun:
    """A DPO run started by `start_training`, training in its own thread. Iterate `events()` for
    its progress (from one consumer; each event is delivered once), then `result()` for what it did."""

    def __init__(self, left_out: int = 0) -> None:
        self.left_out = left_out  # stored votes the cleaning rules flagged, not trained on
        self._events: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self._result: TrainResult | None = None
        self._error: PlaygroundError | None = None

    def events(self) -> Iterator[StepEvent]:
        """Each step's event as it happens; ends when the run has ended (finished, cancelled or failed)."""
        while (item := self._events.get()) is not _END:
            yield item
        self._events.put(_END)  # so a second iteration ends at once instead of waiting forever

    def result(self, timeout: float | None = None) -> TrainResult:
        """Wait for the run to end; its result (`cancelled`, or `checkpoint` now serving), or its
        error raised as a `PlaygroundError`."""
        if not self._done.wait(timeout):
            raise PlaygroundError(f"the training run did not end within {timeout:g} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None  # set before _done whenever there is no error
        return self._result


def busy(state: AppState) -> str:
    """Why a run cannot start: one runs in this app (`BUSY`), or which replica on the store trains."""
    holder = None if state.training.locked() else state.training.holder()
    return holder.refusal() if holder else BUSY


def start_training(state: AppState, cfg: DPOConfig, merge: bool = False, clean: bool = True) -> TrainingRun:
    """Start a DPO run (or any `DPOConfig.loss`) on every stored vote's pairs and the imported pairs
    (`clean`: less the votes the cleaning rules flag, `service.cleaning.vote_flags`, counted in
    `TrainingRun.left_out`; `merge`: the voting queue's votes as one merged majority vote per
    prompt, see `merge_votes`);
    KTO adds the unpaired rows (`Store.unpaired_rows`: single votes, both-bad answers, imported). The run trains in a
    thread; when it finishes its checkpoint is registered, attached to the slots and serves as the
    policy, now and after a restart. Raises at once (nothing started) for bad settings or while
    another run holds the lock."""
    if not state.training.acquire(blocking=False):
        raise PlaygroundError(busy(state))
    try:
        state.cancel_training.clear()  # a Cancel left from an earlier run; one pressed from now on counts
        cfg.validate()
        votes = state.store.votes.list()
        flagged = vote_flags(state) if clean else {}
        kept = [v for v in votes if v.id not in flagged]
        votes = merge_votes(kept).votes if merge else kept
        pairs = state.store.training_pairs("all_pairs", cfg.seed, votes)
        # KTO also learns from answers judged alone: single votes, both sides of a both-bad vote.
        unpaired = state.store.unpaired_rows(votes) if cfg.loss == "kto" else []
        run = TrainingRun(left_out=len(flagged))
        threading.Thread(target=_train, args=(state, run, pairs, unpaired, cfg), daemon=True,
                         name="dpo-training").start()
    except BaseException:
        state.training.release()
        raise
    return run


def _train(state: AppState, run: TrainingRun, pairs: list[PreferenceRow], unpaired: list[UnpairedRow],
           cfg: DPOConfig) -> None:
    """The DPO worker thread (`publish_run`)."""
    publish_run(state, run, lambda callback, should_stop: train_dpo(
        state.models, pairs, cfg, state.checkpoint_dir, callback=callback, should_stop=should_stop,
        unpaired=unpaired), "training")


def publish_run(state: AppState, run: TrainingRun, train: Callable[[Callback, Callable[[], bool]], Any],
                what: str) -> None:
    """The worker thread of any run that trains the policy (DPO and its siblings, RLHF): `train`
    (callback, should_stop) runs it and returns a result whose `checkpoint` (None when cancelled)
    the engine has already published as the policy; here it is registered and recorded as serving.
    If registering fails, the previous adapter is put back and the folder removed. Always releases
    `state.training` and ends the run's events; an error is the run's, as a `PlaygroundError`."""
    try:
        with state.models.lock:  # to put back if registering fails after the engine has published
            served = {n: p.detach().clone() for n, p in adapter_params(state.models.policy.model).items()}
            source, ident = state.models.policy.source, state.models.policy.ident
        result = train(lambda step, total, m: run._events.put(StepEvent(step, total, m)),
                       state.cancel_training.is_set)
        if result.checkpoint is not None:
            try:
                state.add_checkpoint(result.checkpoint)
                state.remember_serving(result.checkpoint.name)
            except Exception:
                set_policy_weights(state.models, served, source, ident)
                shutil.rmtree(result.checkpoint, ignore_errors=True)
                state.checkpoints.pop(result.checkpoint.name, None)
                raise
        run._result = result
    except PlaygroundError as exc:
        run._error = exc
    except Exception as exc:  # the engine has already left the policy as it was
        run._error = PlaygroundError(f"{what} failed: {type(exc).__name__}: {exc}")
    finally:
        state.training.release()
        run._done.set()
        run._events.put(_END)


def cancel_training(state: AppState) -> bool:
    """Ask the running DPO or reward-model run to stop after its current step; False when none runs."""
    if not state.training.locked():
        return False
    state.cancel_training.set()
    return True


def serve_checkpoint(state: AppState, name: str) -> None:
    """Make checkpoint `name` the serving policy, now and after a restart."""
    state.serve(name)


def checkpoint_records(state: AppState) -> list[CheckpointRecord]:
    """Every registered checkpoint's record, oldest first (those other replicas registered attached first)."""
    state.sync_checkpoints()
    return [CheckpointRecord.registered(c) for c in state.store.checkpoints.list()]


def checkpoint_table(state: AppState) -> pd.DataFrame:
    """The Train tab's table, newest first; empty (headers kept) before the first run."""
    serving = Path(state.models.policy.source).name  # a checkpoint serves from its folder
    rows = []
    for rec in reversed(checkpoint_records(state)):
        before, after = rec.heldout_before, rec.heldout_after
        rows.append({
            "checkpoint": rec.id, "serving": "●" if rec.id == serving and rec.id in state.checkpoints else "",
            "parent": rec.parent or "SFT", "loss": loss_label(rec.hyperparameters.get("loss", "sigmoid")),
            "pairs": rec.pairs, "steps": rec.steps,
            "held-out acc before→after": f"{before.accuracy:.2f} → {after.accuracy:.2f}" if before and after else "—",
            "held-out margin after": round(after.margin, 4) if after else None,
            "β": rec.beta,
            "created": rec.created_local(),
        })
    return pd.DataFrame(rows, columns=TRAIN_TABLE_COLUMNS)


@dataclass(frozen=True)
class RewardRun:
    """A finished reward-model run, saved in `folder`."""

    folder: Path
    result: RewardTrainResult

    @property
    def steps(self) -> list[Metrics]:
        return self.result.steps

    @property
    def train_pairs(self) -> int:
        return self.result.train_pairs

    @property
    def heldout_before(self) -> HeldOut | None:
        return self.result.heldout_before

    @property
    def heldout_after(self) -> HeldOut | None:
        return self.result.heldout_after


def reward_model_dir(state: AppState) -> Path:
    """Where the app's reward models live: one folder each."""
    return state.data_dir / "reward-models"


def reward_model_folders(state: AppState) -> list[Path]:
    """Complete reward-model folders, oldest first (their names sort by time)."""
    folder = reward_model_dir(state)
    return sorted(d for d in folder.iterdir() if (d / REWARD_RECORD).is_file()) if folder.is_dir() else []


def reward_models(state: AppState) -> list[str]:
    """The reward models' names (their folder names), oldest first: what a judge picker offers."""
    return [d.name for d in reward_model_folders(state)]


def new_reward_model_folder(state: AppState) -> Path:
    """A new `rm-<YYYYmmdd-HHMMSS>-<random>` (UTC) under `reward_model_dir`: sorts by time, and the
    random tail keeps two runs in one second apart, and a name already taken is drawn again."""
    while True:
        folder = reward_model_dir(state) / f"rm-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
        if not folder.exists():
            return folder


def train_reward_model(state: AppState, cfg: RewardConfig, progress: Callback | None = None) -> RewardRun:
    """Train a Bradley–Terry reward model on the pairs DPO would use (every vote, then imported
    pairs) and save it in a new folder under `reward_model_dir`. Holds the training lock (one run
    at a time); `cancel_training` stops it after the current step, and then nothing is saved and a
    `PlaygroundError` says so."""
    if not state.training.acquire(blocking=False):
        raise PlaygroundError(busy(state))
    try:
        state.cancel_training.clear()  # as in start_training
        cfg.validate()
        pairs = state.store.training_pairs("all_pairs", cfg.seed)
        result = train_reward_model_on(state.models.sft.source, state.models.tokenizer, pairs, cfg,
                                       callback=progress, should_stop=state.cancel_training.is_set,
                                       device=state.models.device, dtype=state.models.dtype)
        if result.model is None:
            raise PlaygroundError(f"the reward-model run was cancelled after {len(result.steps)} steps; "
                                  "nothing was saved")
        return RewardRun(result.model.save(new_reward_model_folder(state)), result)
    finally:
        state.training.release()

