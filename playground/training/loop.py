"""The optimizer loop DPO (`dpo`) and the reward model (`reward_model`) share.

A run is a fixed schedule of batches (lists of indices into the training pairs). For each batch:
ask `should_stop()` (True ends the run, nothing more is stepped), call the task's `forward(batch)`
for the mean loss over the batch and that step's task metrics, refuse a NaN/inf loss, backward,
clip the gradient's L2 norm to `max_grad_norm`, refuse a NaN/inf norm, take one AdamW step
(constant learning rate, no weight decay), add the shared metrics (grad_norm, learning_rate,
pairs, epoch = pairs seen / training pairs, seconds = wall time of the step) and report them to
`callback(step, total, metrics)`. A refused value raises before the optimizer steps; the caller
turns any failure into one `abandoned` error that says how far the run got.
"""

import time
from collections.abc import Callable, Iterable, Sequence

import torch

from playground.core.errors import PlaygroundError

Metrics = dict[str, float]
Callback = Callable[[int, int, Metrics], None]  # (step, total steps, that step's metrics)
# One batch's indices -> (mean loss over the batch, in the autograd graph; the step's task metrics)
Forward = Callable[[list[int]], tuple[torch.Tensor, Metrics]]


def run_steps(params: Iterable[torch.nn.Parameter], schedule: Sequence[list[int]], forward: Forward, *,
              lr: float, max_grad_norm: float, n_train: int, history: list[Metrics],
              callback: Callback | None = None, should_stop: Callable[[], bool] | None = None) -> bool:
    """Step through `schedule` (module docstring), appending each step's metrics to `history` (so a
    caller knows how many steps were taken when this raises). True when every step ran, False when
    `should_stop()` ended the run early. A NaN/inf loss or gradient norm raises a `PlaygroundError`."""
    params = list(params)  # the optimizer and the clipping see the same tensors in the same order
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    seen = 0
    for batch in schedule:
        if should_stop is not None and should_stop():
            return False
        started = time.perf_counter()
        loss, metrics = forward(batch)
        grad_norm = optimizer_step(optimizer, params, loss, max_grad_norm)
        seen += len(batch)
        metrics.update({"grad_norm": grad_norm, "learning_rate": lr, "pairs": len(batch),
                        "epoch": seen / n_train, "seconds": time.perf_counter() - started})
        history.append(metrics)
        if callback is not None:
            callback(len(history), len(schedule), metrics)
    return True


def optimizer_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor,
                   max_grad_norm: float) -> float:
    """Refuse a NaN/inf loss or gradient before anything changes, else one clipped step; the
    gradient norm before clipping."""
    if not torch.isfinite(loss):
        raise PlaygroundError(f"the loss is {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if not torch.isfinite(grad_norm):
        raise PlaygroundError(f"the gradient norm is {grad_norm.item()}")
    optimizer.step()
    return float(grad_norm)


def abandoned(exc: BaseException, done: int, total: int, what: str, kept: str) -> PlaygroundError:
    """The one error a failed run raises: `<what> abandoned after <done> of <total> steps: <reason>;
    <kept>`; an engine error's reason is its message, anything else `Type: message`."""
    reason = str(exc) if isinstance(exc, PlaygroundError) else f"{type(exc).__name__}: {exc}"
    return PlaygroundError(f"{what} abandoned after {done} of {total} steps: {reason}; {kept}")
