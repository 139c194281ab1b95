"""DPO training speed and memory: ours against TRL's DPOTrainer, same pairs, model, LoRA and steps.

`playground bench dpo [--quick] [--model FOLDER]`. Runs on the packaged SmolLM2-135M-Instruct
(or the HF folder --model: the same architecture with random weights times the same) with a
fresh LoRA adapter (r=16, alpha=32 on q/k/v/o), batch 4 pairs, lr 5e-4, β 0.1, the same synthetic
conversational pairs (`synthetic.chat_pairs`), the same number of steps, on the same device:

- ours:          `playground.training.dpo.train_dpo` (reference pass once, shared-prompt pair rows,
                 completion-only vocabulary projection), nothing held out; the model in float32,
                 the default on CPU (bfloat16 on CUDA)
- ours-bf16:     the same with the model loaded in bfloat16 (`--dtype bfloat16`)
- trl-tuned:     TRL 1.16 DPOTrainer with bf16=False, gradient_checkpointing=False,
                 precompute_ref_log_probs=True
- trl-defaults:  TRL's DPOConfig as shipped (bf16 autocast, gradient checkpointing, a reference
                 forward every step)

The other losses, ours against TRL's own trainer for each at the same settings (β 0.1, SimPO γ 0.5,
ORPO λ 0.1, KTO weights 1; TRL with bf16=False and gradient_checkpointing=False, KTO's reference
precomputed as ours is), run once (the first round only):

- ours-kto / trl-kto:      KTO on both answers of every pair, batch 4 completions (TRL's KTOTrainer)
- ours-simpo / trl-simpo:  SimPO, no reference (TRL's experimental CPOTrainer, loss_type="simpo", cpo_alpha=0)
- ours-orpo / trl-orpo:    ORPO, no reference (TRL's experimental ORPOTrainer)

The two bfloat16 variants run only where bfloat16 is native (CUDA, or a CPU with AVX512-BF16 or
AMX-BF16); on an AVX2-only CPU it is emulated, many times slower, and they are skipped unless
`--emulated-bf16` (the JSON says which were skipped and why).

Each run is its own subprocess, so imports and allocator caches do not carry over; the variants take
turns for `--repeats` rounds, the order reversed every other round (A B C D, D C B A, …), so a
neighbour's load falls on all of them. Each run
is split into its training steps (each timed alone: ours by `train_dpo`'s per-step `seconds`, TRL
by a callback from `on_step_begin` to `on_step_end`) and set-up, everything else once the model is
loaded: tokenization, the reference pass where it is precomputed, trainer construction, and our
checkpoint write. The headline is the per-step time over EVERY step: each run's training time
(all its steps summed) divided by its steps, the median over rounds. Both sides train the same
pairs in the same number of steps, but not in the same order (ours buckets batches by length, so
its first step is its longest; TRL's batches are shuffled), so a median over steps, or one that
drops the first, would compare different work. The first step is also reported alone
(`first_step_s`: it pays one-off allocations too); set-up and end-to-end seconds are medians over
rounds. Step counts are equal, so end-to-end pairs/s compare
too. Peak memory: on CPU the growth of the resident set over its size after loading, sampled
every 5 ms by a thread; on a GPU the growth of `torch.cuda.max_memory_allocated` over the
allocation after loading; the median over rounds.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import bf16_native, median, report
from bench.synthetic import chat_pairs

ROOT = Path(__file__).resolve().parents[1]
BATCH, LR, BETA, MAX_WORDS = 4, 5e-4, 0.1, 160
TRL_TUNED = {"bf16": False, "gradient_checkpointing": False, "precompute_ref_log_probs": True}
LOSS_VARIANTS = ("ours-kto", "trl-kto", "ours-simpo", "trl-simpo", "ours-orpo", "trl-orpo")  # one round each
VARIANTS = ("ours", "ours-bf16", "trl-tuned", "trl-defaults", *LOSS_VARIANTS)
BF16_VARIANTS = ("ours-bf16", "trl-defaults")


class PeakMemory:
    """Peak memory growth (MiB) over the moment of `start`: RSS sampled by a thread, or CUDA's counter."""

    def __init__(self, device: Any) -> None:
        import psutil
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"
        self.process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.base = self.torch.cuda.memory_allocated()
        else:
            self.base = self.peak = self.process.memory_info().rss
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.peak = self.torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def run_ours(triples: list, steps: int, device: Any, out: Path, model: str | None, dtype: str, loss: str = "sigmoid"
             ) -> dict[str, Any]:
    from playground.core.home import data_dir
    from playground.data.rows import PreferenceRow
    from playground.models.roles import ModelsConfig, load_models
    from playground.training.dpo import DPOConfig, train_dpo

    models = load_models(ModelsConfig(sft=model, models_dir=data_dir() / "models", device=str(device), dtype=dtype))
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        rows = [PreferenceRow(p, c, r) for p, c, r in triples]
        cfg = DPOConfig(steps=steps, batch_size=BATCH, lr=LR, beta=BETA, heldout=0, loss=loss)
        result = train_dpo(models, rows, cfg, out)
        seconds = time.perf_counter() - started
    return {"config": f"weights {str(models.dtype).removeprefix('torch.')} loss={loss}", "seconds": seconds,
            "step_seconds": [m["seconds"] for m in result.steps], "peak_mib": memory.growth_mib,
            "final_loss": result.steps[-1]["loss"]}


def trl_trainer(loss: str) -> tuple[Any, Any, dict[str, Any]]:
    """(config class, trainer class, settings beyond the shared ones) of TRL's trainer for `loss`."""
    if loss == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer, {"beta": BETA, "precompute_ref_log_probs": True}
    if loss == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOConfig, CPOTrainer, {"beta": BETA, "loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": 0.5}
    if loss == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOConfig, ORPOTrainer, {"beta": 0.1}  # ORPO's λ
    from trl import DPOConfig, DPOTrainer

    return DPOConfig, DPOTrainer, {"beta": BETA}


def run_trl(triples: list, steps: int, device: Any, out: Path, model: str | None, overrides: dict[str, Any],
            loss: str = "sigmoid") -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from playground.core.home import data_dir
    from playground.models.gguf_convert import ensure_default_model

    folder = model or ensure_default_model(data_dir() / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    config_class, trainer_class, settings = trl_trainer(loss)
    args = config_class(output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
                        max_length=1024, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                        disable_tqdm=True, use_cpu=device.type == "cpu", **settings, **overrides)
    step_seconds: list[float] = []

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step, forward to optimizer update (as `train_dpo` times its steps)."""

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_seconds.append(time.perf_counter() - self.started)

    with PeakMemory(device) as memory:
        started = time.perf_counter()
        data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in triples])
        trainer = trainer_class(model=lm, args=args, train_dataset=data, processing_class=tokenizer,
                                peft_config=lora, callbacks=[StepTimer()])
        trainer.train()
        seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    config = (f"{trainer_class.__name__} bf16={args.bf16} grad_ckpt={args.gradient_checkpointing} "
              f"precompute_ref={getattr(args, 'precompute_ref_log_probs', None)}")
    return {"config": config, "seconds": seconds, "step_seconds": step_seconds, "peak_mib": memory.growth_mib,
            "final_loss": losses[-1]}


def child(variant: str, n_pairs: int, steps: int, model: str | None) -> dict[str, Any]:
    """One run in this process; the parent reads the returned dict as JSON from stdout."""
    from playground.models.sources import quiet_libraries

    quiet_libraries()
    from playground.models.devices import resolve_device

    device = resolve_device("auto")
    triples = chat_pairs(n_pairs, max_words=MAX_WORDS)
    loss = variant.split("-")[1] if variant in LOSS_VARIANTS else "sigmoid"
    with tempfile.TemporaryDirectory() as tmp:
        if variant.startswith("ours"):
            dtype = "bfloat16" if variant == "ours-bf16" else "auto"
            run = run_ours(triples, steps, device, Path(tmp), model, dtype, loss)
        else:
            overrides = {} if variant == "trl-defaults" else dict(TRL_TUNED)
            if variant in LOSS_VARIANTS:  # the reference-free trainers have no reference to precompute
                overrides.pop("precompute_ref_log_probs")
            run = run_trl(triples, steps, device, Path(tmp), model, overrides, loss)
    return {"method": variant, "config": run.pop("config"), "device": str(device), "pairs": n_pairs, "steps": steps,
            **run}


def run_child(variant: str, n_pairs: int, steps: int, model: str | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "cli", "bench", "dpo", "--child", variant, "--pairs", str(n_pairs),
           "--steps", str(steps)]
    cmd += ["--model", model] if model else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per variant: medians over its rounds; per-step time as each run's steps summed over
    their number (every step counts: see the module docstring)."""
    setups = [r["seconds"] - sum(r["step_seconds"]) for r in runs]
    seconds = median([r["seconds"] for r in runs])
    first = runs[0]
    return {
        "method": variant, "config": first["config"], "device": first["device"], "pairs": first["pairs"],
        "steps": first["steps"],
        "step_s": median([sum(r["step_seconds"]) / len(r["step_seconds"]) for r in runs]),
        "first_step_s": median([r["step_seconds"][0] for r in runs]), "setup_s": median(setups),
        "seconds": seconds, "pairs_per_s": first["steps"] * BATCH / seconds,
        "peak_mib": median([r["peak_mib"] for r in runs]), "final_loss": first["final_loss"],
        "all_seconds": [round(r["seconds"], 1) for r in runs], "all_setup_s": [round(x, 1) for x in setups],
        "all_step_s": [[round(t, 2) for t in r["step_seconds"]] for r in runs],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench dpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8, help="synthetic conversational pairs")
    parser.add_argument("--steps", type=int, default=3, help="training steps of 4 pairs, every variant")
    parser.add_argument("--quick", action="store_true", help="4 pairs, 2 steps, one round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all variants, taking turns")
    parser.add_argument("--emulated-bf16", action="store_true",
                        help="run the bfloat16 variants even on a CPU without native bfloat16 (very slow)")
    parser.add_argument("--model", help="an HF model folder to use instead of the packaged SmolLM2")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.pairs, args.steps, args.model)))
        return
    load_before = os.getloadavg()
    if args.quick:
        args.pairs, args.steps, args.repeats = 4, 2, 1
    import torch

    native = torch.cuda.is_available() or bf16_native()
    variants = [v for v in VARIANTS if native or args.emulated_bf16 or v not in BF16_VARIANTS]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_ in range(args.repeats):
        for v in variants[:: -1 if round_ % 2 else 1]:
            if round_ == 0 or v not in LOSS_VARIANTS:
                runs[v].append(run_child(v, args.pairs, args.steps, args.model))
    rows = {v: summarize(v, rs) for v, rs in runs.items()}
    ours = rows["ours"]
    ratios: dict[str, Any] = {
        "step_ours_over_trl_tuned": rows["trl-tuned"]["step_s"] / ours["step_s"],
        "setup_ours_over_trl_tuned": rows["trl-tuned"]["setup_s"] / ours["setup_s"],
        "end_to_end_ours_over_trl_tuned": rows["trl-tuned"]["seconds"] / ours["seconds"],
        "memory_ours_over_trl_tuned": ours["peak_mib"] / rows["trl-tuned"]["peak_mib"],
    }
    if "trl-defaults" in rows:
        defaults = rows["trl-defaults"]
        ratios |= {
            "step_ours_over_trl_defaults": defaults["step_s"] / ours["step_s"],
            "step_ours_bf16_over_trl_defaults": defaults["step_s"] / rows["ours-bf16"]["step_s"],
            "end_to_end_ours_over_trl_defaults": defaults["seconds"] / ours["seconds"],
        }
    for loss in ("kto", "simpo", "orpo"):
        ratios[f"step_ours_over_trl_{loss}"] = rows[f"trl-{loss}"]["step_s"] / rows[f"ours-{loss}"]["step_s"]
        ratios[f"end_to_end_ours_over_trl_{loss}"] = rows[f"trl-{loss}"]["seconds"] / rows[f"ours-{loss}"]["seconds"]
        ratios[f"memory_ours_over_trl_{loss}"] = rows[f"ours-{loss}"]["peak_mib"] / rows[f"trl-{loss}"]["peak_mib"]
    skipped = [v for v in VARIANTS if v not in rows]
    report("dpo", list(rows.values()), {
        "repeats": args.repeats, "bf16_native": native, **ratios,
        "skipped": {v: "bfloat16 is emulated on this CPU (no avx512_bf16/amx_bf16); --emulated-bf16 runs it"
                    for v in skipped},
    }, load_before)

