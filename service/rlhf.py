"""RLHF runs on a running app's state: PPO, RLOO or GRPO against one of the app's reward models, on a
stored prompt set (or any prompts), streaming per-step metrics; the new checkpoint is registered and
serves. The Train tab, a gradio_client user and a script call these same functions.

The same lock, cancel and safety as a DPO run (`service.training`): `state.training` is held from
`start_rlhf` until the run has ended, `cancel_training` stops it after the current step, and a
failed or cancelled run leaves the serving policy bit-identical and writes nothing.
"""

import threading
from collections.abc import Callable
from pathlib import Path

from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.training.loop import Callback
from playground.training.reward_model import RECORD as REWARD_RECORD
from playground.training.reward_model import load_reward_model
from playground.training.rlhf import RLHFConfig, RLHFResult, train_rlhf
from service.state import AppState
from service.training import TrainingRun, busy, publish_run, reward_model_dir


class RLHFRun(TrainingRun):
    """An RLHF run started by `start_rlhf`: `events()` yields a `StepEvent` per step (metrics named in
    `playground.training.rlhf`), `result()` waits for its `RLHFResult`."""

    def result(self, timeout: float | None = None) -> RLHFResult:  # type: ignore[override]
        return super().result(timeout)  # type: ignore[return-value]


def reward_model_folder(state: AppState, reward_model: str | Path) -> Path:
    """A reward model by name (a folder under `reward_model_dir`, as `reward_models` lists them) or path."""
    folder = Path(reward_model)
    if not folder.is_absolute() and not folder.exists():
        folder = reward_model_dir(state) / folder
    if not (folder / REWARD_RECORD).is_file():
        raise PlaygroundError(f"no reward model {str(reward_model)!r}; train one first (Train tab, or "
                              "playground reward-model)")
    return folder


def prompt_set_prompts(state: AppState, name: str) -> list[list[Message]]:
    """The stored prompt set `name`'s prompts as chat messages, in file order."""
    return [list(p.messages) for p in state.store.prompt_sets.prompts(state.store.prompt_sets.get(name).id)]


def start_rlhf(state: AppState, cfg: RLHFConfig, prompts: list[list[Message]], reward_model: str | Path) -> RLHFRun:
    """Start an RLHF run on `prompts` (chat messages each; see `prompt_set_prompts`) against the reward
    model `reward_model` (a name from `reward_models`, or a folder). It trains in a thread; when it
    finishes its checkpoint is registered, attached to the slots and serves as the policy, now and
    after a restart. Raises at once (nothing started) for bad settings, no prompts, an unknown reward
    model, or while another run holds the lock."""
    if not state.training.acquire(blocking=False):
        raise PlaygroundError(busy(state))
    try:
        state.cancel_training.clear()  # a Cancel left from an earlier run; one pressed from now on counts
        cfg.validate()
        if not prompts:
            raise PlaygroundError("RLHF needs prompts: import a prompt set first")
        folder = reward_model_folder(state, reward_model)
        run = RLHFRun()
        threading.Thread(target=_train, args=(state, run, list(prompts), folder, cfg), daemon=True,
                         name="rlhf-training").start()
    except BaseException:
        state.training.release()
        raise
    return run


def _train(state: AppState, run: RLHFRun, prompts: list[list[Message]], folder: Path, cfg: RLHFConfig) -> None:
    """The RLHF worker thread (`service.training.publish_run`): load the reward model, then train."""
    def train(callback: Callback, should_stop: Callable[[], bool]) -> RLHFResult:
        models = state.models
        reward = load_reward_model(folder, base=models.sft.source, device=models.device, dtype=models.dtype,
                                   tokenizer=models.tokenizer)
        return train_rlhf(models, prompts, reward, cfg, state.checkpoint_dir, callback=callback,
                          should_stop=should_stop, reward_model_path=folder)

    publish_run(state, run, train, "RLHF")
