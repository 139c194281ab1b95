"""The same DPO run trained by TRL's `DPOTrainer` (`playground train --engine trl`), one
process or several under `accelerate launch` (DDP, DeepSpeed ZeRO-2: `configs/accelerate/`).

What is the same as `playground.training.dpo.train_dpo`: the pairs (encoded and split into train and
held out by the same code, so the same rows are held out), β, learning rate (constant, AdamW, no
weight decay), step count, --batch-size pairs per optimizer step (split evenly across processes),
gradient clipping, max length, the LoRA adapter (rank, alpha, targets, no dropout; a --policy adapter
trains on from its weights), the reference (the SFT model, i.e. the adapter switched off, or --ref's
model), and the checkpoint: the same folder and `record.json`, with `"engine": "trl"`, so the app
serves and registers it as any other. The held-out metrics are measured by our scorer before and
after, so the tables compare both engines on one yardstick.

What differs: the batches (TRL shuffles with the Trainer's seeded sampler; ours buckets by length),
padding (TRL pads chosen and rejected rows; ours packs a pair into one tree-masked row: equal
log-probs to ~1e-5, tests/test_trl_agreement.py), and TRL's per-step metrics, copied from its log
history as named there: `rewards/accuracies` counts a tie as wrong (ours as ½), and TRL adds its own
keys (`logits/*`, `num_tokens`, `entropy`, …). Losses: the ones DPOTrainer has under our name
(`TRL_LOSSES`); KTO, SimPO and ORPO are other TRL trainers and are refused here.

Under DDP each process takes `batch_size / processes` pairs of every global batch (accelerate's
`BatchSamplerShard`: process i the i-th slice of the same seeded order), each computes the mean loss
of its slice and DDP averages the gradients, so a step follows the same gradient as one process with
the whole batch, up to floating-point summation order. Only the main process writes the checkpoint.
"""

import importlib.util
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from playground.core.errors import PlaygroundError
from playground.data.rows import PreferenceRow
from playground.models.checkpoints import write_checkpoint
from playground.models.devices import resolve_device
from playground.models.roles import Models, adapter_params
from playground.scoring.pairs import EncodedPair, all_pair_logps, encode_pairs
from playground.training.dpo import (
    MIN_PAIRS,
    DPOConfig,
    TrainResult,
    heldout_metrics,
    margin_metrics,
    run_record,
    split_pairs,
)
from playground.training.loop import Callback, Metrics
from playground.training.trainee import check_policy, reference_model

TRL_LOSSES = ("sigmoid", "ipo", "hinge", "robust")  # DPOTrainer's loss_type values that mean what ours do
INSTALL_HINT = "pip install -r requirements-dev.txt (trl, datasets)"


def require_trl() -> None:
    """One clear line when TRL (a dev dependency) is missing."""
    missing = [name for name in ("trl", "datasets") if importlib.util.find_spec(name) is None]
    if missing:
        raise PlaygroundError(f"--engine trl needs {' and '.join(missing)}, not installed here: {INSTALL_HINT}")


def require_deepspeed_if_asked() -> None:
    """`accelerate launch` with a DeepSpeed config tells its processes so by environment; without the
    package the Trainer would fail deep inside its set-up."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes") and (
            importlib.util.find_spec("deepspeed") is None):
        raise PlaygroundError("this run is launched with DeepSpeed (ACCELERATE_USE_DEEPSPEED), but deepspeed is not "
                              "installed: pip install deepspeed, or launch with configs/accelerate/ddp.yaml")


def check_loss(cfg: DPOConfig) -> None:
    if cfg.loss not in TRL_LOSSES:
        raise PlaygroundError(f"--engine trl trains --loss {', '.join(TRL_LOSSES)} (TRL's DPOTrainer); {cfg.loss} "
                              "is another TRL trainer: use --engine ours for it")


def process_device(name: str) -> torch.device:
    """The device this process trains on, as accelerate assigns it (under `accelerate launch` one
    GPU per process; else cuda, then mps, then cpu). `--device cpu` asks for the CPU; any other
    explicit device must be the one accelerate gives this process."""
    from accelerate import PartialState

    requested = resolve_device(name)  # validates the name against this machine
    device = PartialState(cpu=requested.type == "cpu").device
    if name != "auto" and (requested.type, requested.index or 0) != (device.type, device.index or 0):
        raise PlaygroundError(f"--device {name}: accelerate gives this process {device}; choose devices with "
                              "accelerate's flags (--cpu, --gpu_ids) or CUDA_VISIBLE_DEVICES, and keep --device auto")
    return device


def is_main_process() -> bool:
    """Whether this is the main process of an `accelerate launch` (or the only process)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def process_count() -> int:
    from accelerate import PartialState

    return PartialState().num_processes


def trl_config(cfg: DPOConfig, models: Models, total_steps: int, output_dir: str) -> Any:  # -> trl.DPOConfig
    """TRL's DPOConfig for the run: our settings, the Trainer's extras switched to what ours does."""
    from trl import DPOConfig as TRLConfig

    processes = process_count()
    if cfg.batch_size % processes:
        raise PlaygroundError(f"--batch-size {cfg.batch_size} does not split evenly across {processes} processes "
                              "(each takes the same share of a step's pairs)")
    return TRLConfig(
        output_dir=output_dir, beta=cfg.beta, loss_type=[cfg.loss], label_smoothing=cfg.label_smoothing,
        learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_steps=total_steps, per_device_train_batch_size=cfg.batch_size // processes,
        max_grad_norm=cfg.max_grad_norm, max_length=cfg.max_length, seed=cfg.seed, data_seed=cfg.seed,
        # The model is loaded in its run dtype (bf16 on cuda); autocast matches it. TRL's own default,
        # bf16 plus gradient checkpointing everywhere, is many times slower on CPU (shared/NOTES.md).
        bf16=models.dtype == torch.bfloat16, fp16=models.dtype == torch.float16, gradient_checkpointing=False,
        use_cpu=models.device.type == "cpu", logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_drop_last=False,
    )


def step_metrics(log_history: list[dict[str, Any]], pairs_per_step: int) -> list[Metrics]:
    """One entry per optimizer step from the Trainer's log history (logging every step): TRL's
    numbers as it names them, plus `pairs` as ours records it."""
    return [{**{k: float(v) for k, v in entry.items() if k != "step" and isinstance(v, int | float)},
             "pairs": pairs_per_step}
            for entry in log_history if "loss" in entry]


def _progress(callback: Callback, total: int, pairs_per_step: int) -> Any:  # -> transformers.TrainerCallback
    """`callback(step, total, metrics)` after each logged step, on the main process only."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
            if state.is_world_process_zero and logs and "loss" in logs:
                callback(state.global_step, total, step_metrics([logs], pairs_per_step)[0])

    return Progress()


def _heldout(models: Models, trainee: torch.nn.Module, heldout: list[EncodedPair], ref_held: torch.Tensor | None,
             cfg: DPOConfig) -> tuple[Any, Any]:
    """(implicit-reward, log-prob margin) held-out metrics of `trainee` now, as `train_dpo` measures them."""
    if ref_held is None:
        return None, None
    logps = all_pair_logps(trainee, heldout, cfg.batch_size, models.tokenizer.pad_token_id, models.device)
    return heldout_metrics(logps, ref_held, cfg.beta), margin_metrics(logps)


def train_with_trl(models: Models, pairs: Sequence[PreferenceRow], cfg: DPOConfig, out_dir: Path,
                   callback: Callback | None = None) -> TrainResult:
    """Train `models.policy`'s LoRA adapter in place with TRL's DPOTrainer on `pairs` (module
    docstring); on the main process write a checkpoint under `out_dir` (other processes return
    `checkpoint=None`) and call `callback(step, total_steps, metrics)` after every step. A
    command-line run: unlike `train_dpo` it does not protect a served model. Any failure raises a
    `PlaygroundError` and writes nothing."""
    cfg.validate()
    check_loss(cfg)
    require_trl()
    require_deepspeed_if_asked()
    from datasets import Dataset, disable_progress_bars
    from transformers import PrinterCallback
    from trl import DPOTrainer

    disable_progress_bars()  # TRL's per-map bars; the command shows one step bar (`callback`)

    started = time.perf_counter()
    check_policy(models, cfg.lora)
    encoded, skipped = encode_pairs(models.tokenizer, pairs, cfg.max_length)
    if len(encoded) < MIN_PAIRS:
        raise PlaygroundError(f"{cfg.loss} needs at least {MIN_PAIRS} usable pairs, got {len(encoded)} of {len(pairs)}")
    train, heldout = split_pairs(encoded, cfg)
    total = cfg.total_steps(len(train))
    trainee = models.policy.model
    for p in adapter_params(trainee).values():
        p.requires_grad_(True)
    ref_held = None
    if heldout:
        with reference_model(models, trainee) as ref_model:
            ref_held = all_pair_logps(ref_model, heldout, cfg.batch_size, models.tokenizer.pad_token_id, models.device)
    before, logps_before = _heldout(models, trainee, heldout, ref_held, cfg)
    data = Dataset.from_list([{"prompt": pairs[p.row].prompt, "chosen": pairs[p.row].chosen,
                               "rejected": pairs[p.row].rejected} for p in train])
    with tempfile.TemporaryDirectory(prefix="trl-") as scratch:
        trainer = DPOTrainer(model=trainee, args=trl_config(cfg, models, total, scratch), train_dataset=data,
                             processing_class=models.tokenizer,
                             ref_model=None if models.shares_base else models.reference.model,
                             callbacks=[_progress(callback, total, cfg.batch_size)] if callback else None)
        trainer.remove_callback(PrinterCallback)  # it prints every step's log dict; `callback` reports steps
        # TRL makes a loaded adapter's frozen copy ("ref") the reference; ours is the SFT model (adapter
        # off), which TRL uses when there is no "ref" adapter: drop it so both engines optimise one objective.
        if "ref" in trainee.peft_config:
            trainee.delete_adapter("ref")
        try:
            trainer.train()
        except Exception as exc:
            raise PlaygroundError(f"TRL training failed after {trainer.state.global_step} of {total} steps, nothing "
                                  f"was written: {type(exc).__name__}: {exc}") from exc
        history = step_metrics(trainer.state.log_history, cfg.batch_size)
        main = trainer.accelerator.is_main_process
    trainee.eval()
    after, logps_after = _heldout(models, trainee, heldout, ref_held, cfg)
    truncated = sum(p.chosen.truncated or p.rejected.truncated for p in encoded)
    result = TrainResult(
        checkpoint=None, steps=history, total_steps=total, pairs=len(encoded), train_pairs=len(train),
        heldout_pairs=len(heldout), skipped=skipped, truncated=truncated, heldout_before=before, heldout_after=after,
        heldout_logps_before=logps_before, heldout_logps_after=logps_after, seconds=time.perf_counter() - started)
    if not main:
        return result
    import accelerate
    import trl

    record = run_record(models, [pairs[p.row] for p in encoded], [p.row for p in heldout], [], cfg, result)
    record = {**record, "engine": "trl", "processes": process_count(),
              "versions": {**record["versions"], "trl": trl.__version__, "accelerate": accelerate.__version__}}
    checkpoint = write_checkpoint(trainee, out_dir, record)
    return replace(result, checkpoint=checkpoint, seconds=time.perf_counter() - started)
