"""DPO training speed and memory: ours against TRL's DPOTrainer, same pairs, model, LoRA and steps.

`python -m evals.bench.dpo [--quick] [--model FOLDER]`. Runs on the packaged SmolLM2-135M-Instruct
(or the HF folder --model: the same architecture with random weights times the same) with a
fresh LoRA adapter (r=16, alpha=32 on q/k/v/o), batch 4 pairs, lr 5e-4, β 0.1, the same synthetic
conversational pairs (`synthetic.chat_pairs`), on the same device:

- ours:          `playground.dpo.train_dpo` (reference pass once, shared-prompt pair rows,
                 completion-only vocabulary projection), nothing held out; the model in float32,
                 the default on CPU (bfloat16 on CUDA)
- ours-bf16:     the same with the model loaded in bfloat16 (`--dtype bfloat16`); on CPUs with
                 native bf16 (AVX512-BF16/AMX) this compares with TRL's bf16 autocast default
- trl-tuned:     TRL 1.16 DPOTrainer with bf16=False, gradient_checkpointing=False,
                 precompute_ref_log_probs=True
- trl-defaults:  TRL's DPOConfig as shipped (bf16 autocast, gradient checkpointing, a reference
                 forward every step); only `--defaults-steps` steps (slow on CPUs without bf16)

Each run is its own subprocess, so imports and allocator caches do not carry over. The variants
take turns for `--repeats` rounds and each keeps its fastest run: on a shared machine that is the
least disturbed one. Time is end to end once the model is loaded: tokenization, reference pass,
the training steps (and our checkpoint write). pairs/s = pairs trained on (steps × batch) / that
time. Peak memory: on CPU the growth of the resident set over its size after loading, sampled
every 5 ms by a thread; on a GPU the growth of `torch.cuda.max_memory_allocated` over the
allocation after loading.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from evals.bench.common import report
from evals.bench.synthetic import chat_pairs

ROOT = Path(__file__).resolve().parents[2]
BATCH, LR, BETA, MAX_WORDS = 4, 5e-4, 0.1, 160
TRL_TUNED = {"bf16": False, "gradient_checkpointing": False, "precompute_ref_log_probs": True}
VARIANTS = ("ours", "ours-bf16", "trl-tuned", "trl-defaults")


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


def run_ours(triples: list, steps: int, device: Any, out: Path, model: str | None, dtype: str) -> dict[str, Any]:
    from playground.core.home import data_dir
    from playground.data.rows import PreferenceRow
    from playground.models.roles import ModelsConfig, load_models
    from playground.training.dpo import DPOConfig, train_dpo

    models = load_models(ModelsConfig(sft=model, models_dir=data_dir() / "models", device=str(device), dtype=dtype))
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        rows = [PreferenceRow(p, c, r) for p, c, r in triples]
        result = train_dpo(models, rows, DPOConfig(steps=steps, batch_size=BATCH, lr=LR, beta=BETA, heldout=0), out)
        seconds = time.perf_counter() - started
    return {"setup": f"weights {str(models.dtype).removeprefix('torch.')}", "seconds": seconds,
            "peak_mib": memory.growth_mib, "final_loss": result.steps[-1]["loss"]}


def run_trl(triples: list, steps: int, device: Any, out: Path, model: str | None, overrides: dict[str, Any]
            ) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from playground.core.home import data_dir
    from playground.models.gguf_convert import ensure_default_model

    folder = model or ensure_default_model(data_dir() / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    args = DPOConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
                     beta=BETA, max_length=1024, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                     disable_tqdm=True, use_cpu=device.type == "cpu", **overrides)
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in triples])
        trainer = DPOTrainer(model=lm, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
        trainer.train()
        seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    setup = (f"bf16={args.bf16} grad_ckpt={args.gradient_checkpointing} "
             f"precompute_ref={args.precompute_ref_log_probs}")
    return {"setup": setup, "seconds": seconds, "peak_mib": memory.growth_mib, "final_loss": losses[-1]}


def child(variant: str, n_pairs: int, steps: int, model: str | None) -> dict[str, Any]:
    """One run in this process; the parent reads the returned dict as JSON from stdout."""
    from playground.cli import quiet_libraries

    quiet_libraries()
    from playground.models.devices import resolve_device

    device = resolve_device("auto")
    triples = chat_pairs(n_pairs, max_words=MAX_WORDS)
    with tempfile.TemporaryDirectory() as tmp:
        if variant in ("ours", "ours-bf16"):
            dtype = "bfloat16" if variant == "ours-bf16" else "auto"
            run = run_ours(triples, steps, device, Path(tmp), model, dtype)
        else:
            overrides = TRL_TUNED if variant == "trl-tuned" else {}
            run = run_trl(triples, steps, device, Path(tmp), model, overrides)
    return {"method": variant, "setup": run.pop("setup"), "device": str(device), "pairs": n_pairs, "steps": steps,
            **run, "pairs_per_s": steps * BATCH / run["seconds"]}


def run_child(variant: str, n_pairs: int, steps: int, model: str | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "evals.bench.dpo", "--child", variant, "--pairs", str(n_pairs), "--steps", str(steps)]
    cmd += ["--model", model] if model else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=24, help="synthetic conversational pairs")
    parser.add_argument("--steps", type=int, default=6, help="training steps of 4 pairs for ours and trl-tuned")
    parser.add_argument("--defaults-steps", type=int, default=2, help="training steps for trl-defaults")
    parser.add_argument("--quick", action="store_true", help="8 pairs, 2 steps (1 for trl-defaults), one round")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all variants; each keeps its fastest")
    parser.add_argument("--model", help="an HF model folder to use instead of the packaged SmolLM2")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.pairs, args.steps, args.model)))
        return
    if args.quick:
        args.pairs, args.steps, args.defaults_steps, args.repeats = 8, 2, 1, 1
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for v in VARIANTS:
            runs[v].append(run_child(v, args.pairs, args.defaults_steps if v == "trl-defaults" else args.steps,
                                     args.model))
    rows = [{**min(rs, key=lambda r: r["seconds"]), "all_seconds": [round(r["seconds"], 1) for r in rs]}
            for rs in runs.values()]
    ours, ours_bf16, tuned, defaults = rows
    report("dpo", rows, {
        "speed_ours_over_trl_defaults": ours["pairs_per_s"] / defaults["pairs_per_s"],
        "speed_ours_over_trl_tuned": ours["pairs_per_s"] / tuned["pairs_per_s"],
        "speed_ours_bf16_over_trl_defaults": ours_bf16["pairs_per_s"] / defaults["pairs_per_s"],
        "memory_ours_over_trl_tuned": ours["peak_mib"] / tuned["peak_mib"],
    })


if __name__ == "__main__":
    main()
