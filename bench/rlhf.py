"""RLHF speed and memory: our RLOO and GRPO against TRL 1.16's RLOOTrainer and GRPOTrainer at equal settings.

`playground bench rlhf [--steps N] [--model FOLDER]`. Every variant runs on the packaged
SmolLM2-135M-Instruct (or the HF folder --model) in float32 with a fresh LoRA adapter (r=16,
alpha=32 on q/k/v/o), the prompts of docs/examples/short-answers.jsonl, P = 4 prompts × K = 4
samples per step, at most 32 new tokens sampled at T = 1 (no top-k/top-p), β 0.05, lr 1e-4, one
optimizer step per rollout, and the same reward model (trained once by the parent on
short-answers.jsonl for 4 steps and saved; TRL calls its `score` as a reward function):

- ours-rloo / ours-grpo:  `playground.training.rlhf.train_rlhf` (KL in the reward, the default)
- trl-rloo:               RLOOTrainer, bf16=False, gradient_checkpointing=False (its KL is in the reward too)
- trl-grpo:               GRPOTrainer, the same, beta 0.05 (its KL is in the loss: k3 per token)

Ours samples from a merged-weight copy of the trainee (`rlhf.Sampler`, rebuilt before every
rollout inside the timed step) and encodes each prompt once for its K rows (`shared_prompt.prompt_cache`,
in sampling and in the reference and policy forwards); TRL samples through the peft model and
encodes every row whole. Both score the 16 samples of a step with the reward model in one batch
(`RewardModel.score(..., batch_size=16)`; ours in `rlhf.rollout`, TRL's through the reward
function below), so the reward model costs the same on both sides.

Each variant is one run (one subprocess, so imports and allocator caches do not carry over). Per
step: the wall time of the whole step (sampling, scoring, reference pass, update; ours by its
`seconds` metric, TRL's from `on_step_begin` to `on_step_end`) and the rollout time, sampling plus
the reward model (ours `rollout_seconds`; TRL's `_generate` and its reward-function calls, timed by
wrapping them), of which the reward model's calls (both timed by wrapping `score`). Headlines,
over all steps but the first (one-off allocations): rollout tokens/s = sampled completion tokens /
rollout seconds, generation tokens/s = the same over rollout seconds less the reward model's,
update steps/s = 1 / median step seconds. Peak memory: the growth of the resident set over its
size after loading (`dpo.PeakMemory`; ours includes the merged copy of the q/k/v/o weights).

The generation floor (`run_floor`, a fifth subprocess): the plain model's forward passes alone for
one step's P·K rows × 32 tokens (each prompt encoded once, then one-token steps with a KV cache, no
sampling, no LoRA, no row ending early), which any sampler at these settings has to run. It is a
generous bound: it counts every row as 32 tokens, while sampled rows end earlier and a rollout still
takes as many steps as its longest row. Its tokens/s over TRL's generation tokens/s bounds what any
faster sampler could gain, and with the reward model's measured time added, so does
`rollout_bound_over_trl_*` for rollout tokens/s.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, report
from bench.dpo import PeakMemory

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "docs" / "examples" / "short-answers.jsonl"
P, K, MAX_NEW, BETA, LR = 4, 4, 32, 0.05, 1e-4
FLOOR = "generation-floor"
VARIANTS = ("ours-rloo", "trl-rloo", "ours-grpo", "trl-grpo", FLOOR)


def prompts() -> list:
    from playground.data.prompt_sets import load_prompt_file

    return [list(p.messages) for p in load_prompt_file(PROMPTS)]


def run_ours(method: str, steps: int, model: str | None, reward_dir: Path, out: Path) -> dict[str, Any]:
    from playground.core.home import data_dir
    from playground.models.roles import ModelsConfig, load_models
    from playground.training.reward_model import load_reward_model
    from playground.training.rlhf import RLHFConfig, train_rlhf

    models = load_models(ModelsConfig(sft=model, models_dir=data_dir() / "models"))
    reward = load_reward_model(reward_dir, device=models.device, dtype=models.dtype, tokenizer=models.tokenizer)
    reward_seconds: list[float] = []  # one score call per step (no held-out prompts)
    score = reward.score

    def timed_score(*args: Any, **kwargs: Any) -> list[float]:
        started = time.perf_counter()
        out = score(*args, **kwargs)
        reward_seconds.append(time.perf_counter() - started)
        return out

    reward.score = timed_score  # type: ignore[method-assign]
    cfg = RLHFConfig(method=method, steps=steps, beta=BETA, lr=LR, samples_per_prompt=K, batch_size=P,
                     max_new_tokens=MAX_NEW, heldout=0)
    with PeakMemory(models.device) as memory:
        result = train_rlhf(models, prompts(), reward, cfg, out)
    return {"config": f"train_rlhf method={method} kl_penalty={cfg.kl_penalty}",
            "step_seconds": [m["seconds"] for m in result.steps],
            "rollout_seconds": [m["rollout_seconds"] for m in result.steps], "reward_seconds": reward_seconds,
            "tokens": [m["tokens"] for m in result.steps], "peak_mib": memory.growth_mib,
            "reward": [m["reward"] for m in result.steps]}


def run_trl(method: str, steps: int, model: str | None, reward_dir: Path, out: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from playground.core.home import data_dir
    from playground.models.gguf_convert import ensure_default_model
    from playground.training.reward_model import load_reward_model

    folder = model or ensure_default_model(data_dir() / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    reward = load_reward_model(reward_dir, device="cpu", dtype=torch.float32, tokenizer=tokenizer)
    rollout: list[float] = [0.0]  # seconds in generation and reward calls during the current step
    scoring: list[float] = [0.0]  # of which in reward calls
    tokens: list[int] = [0]

    def reward_fn(prompts: list, completions: list, **_: Any) -> list[float]:
        started = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        scores = reward.score(prompts, texts, batch_size=len(texts))  # one batch, as train_rlhf scores
        rollout[-1] += time.perf_counter() - started
        scoring[-1] += time.perf_counter() - started
        return scores

    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    config_class, trainer_class = (RLOOConfig, RLOOTrainer) if method == "rloo" else (GRPOConfig, GRPOTrainer)
    args = config_class(output_dir=str(out), max_steps=steps, per_device_train_batch_size=P * K, num_generations=K,
                        max_completion_length=MAX_NEW, beta=BETA, learning_rate=LR, temperature=1.0, top_p=1.0,
                        top_k=0, bf16=False, gradient_checkpointing=False, logging_steps=1, save_strategy="no",
                        report_to="none", seed=0, disable_tqdm=True, use_cpu=True)
    step_seconds: list[float] = []
    rollout_seconds: list[float] = []
    reward_seconds: list[float] = []
    step_tokens: list[int] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            rollout.append(0.0)
            scoring.append(0.0)
            tokens.append(0)
            self.started = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            step_seconds.append(time.perf_counter() - self.started)
            rollout_seconds.append(rollout[-1])
            reward_seconds.append(scoring[-1])
            step_tokens.append(tokens[-1])

    with PeakMemory(torch.device("cpu")) as memory:
        data = Dataset.from_list([{"prompt": p} for p in prompts()])
        trainer = trainer_class(model=lm, reward_funcs=[reward_fn], args=args, train_dataset=data,
                                processing_class=tokenizer, peft_config=lora, callbacks=[StepTimer()])
        generate = trainer._generate

        def timed_generate(batch_prompts: list) -> Any:
            started = time.perf_counter()
            out = generate(batch_prompts)
            rollout[-1] += time.perf_counter() - started
            tokens[-1] += sum(len(ids) for ids in out[1])  # completion ids, second in both trainers' tuple
            return out

        trainer._generate = timed_generate
        trainer.train()
    rewards = [h[key] for h in trainer.state.log_history for key in ("reward",) if key in h]
    return {"config": f"{trainer_class.__name__} bf16=False grad_ckpt=False beta={BETA}",
            "step_seconds": step_seconds, "rollout_seconds": rollout_seconds, "reward_seconds": reward_seconds,
            "tokens": step_tokens,
            "peak_mib": memory.growth_mib, "reward": rewards}


def run_floor(steps: int, model: str | None) -> dict[str, Any]:
    """The generation floor at these settings: the model's own forward passes alone, as any sampler
    of P·K rows × MAX_NEW tokens must run them (each prompt encoded once, then MAX_NEW − 1 one-token
    steps over all rows with a KV cache, logits of the last position only), with no sampling, no
    LoRA, no generation loop and no row ending early. One pass per step; the median is reported."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from playground.core.home import data_dir
    from playground.inference.settings import prompt_ids
    from playground.models.gguf_convert import ensure_default_model
    from playground.models.roles import ModelsConfig, load_models
    from playground.scoring.shared_prompt import prompt_cache

    models = load_models(ModelsConfig(sft=model, models_dir=data_dir() / "models"))
    encoded = [tuple(prompt_ids(models, p)[0].tolist()) for p in prompts()]
    lm = AutoModelForCausalLM.from_pretrained(model or ensure_default_model(data_dir() / "models"),
                                              dtype=torch.float32).eval()
    pad = models.tokenizer.pad_token_id
    seconds = []
    with torch.inference_mode():
        for step in range(steps):
            batch = [p for p in (encoded * P)[step * P : (step + 1) * P] for _ in range(K)]
            started = time.perf_counter()
            cache, prefix = prompt_cache(lm.model, batch, pad, models.device)
            cache = cache or DynamicCache()
            ids = torch.tensor([[p[-1]] for p in batch])  # (P·K, 1)
            mask = torch.cat([prefix, torch.ones(len(batch), 1, dtype=prefix.dtype)], 1)
            positions = torch.tensor([[len(p) - 1] for p in batch])
            for _ in range(MAX_NEW):  # the last prompt token, then MAX_NEW − 1 sampled ones
                out = lm(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
                ids = out.logits[:, -1].argmax(-1, keepdim=True)
                mask = torch.cat([mask, torch.ones_like(ids)], 1)
                positions = positions + 1
            seconds.append(time.perf_counter() - started)
    return {"config": "forward passes only (fp32, no LoRA, no sampling, every row MAX_NEW tokens)",
            "seconds": seconds, "tokens": P * K * MAX_NEW}


def child(variant: str, steps: int, model: str | None, reward_dir: Path) -> dict[str, Any]:
    from playground.models.sources import quiet_libraries

    quiet_libraries()
    if variant == FLOOR:
        return {"method": variant, **run_floor(steps, model)}
    side, method = variant.split("-")
    with tempfile.TemporaryDirectory() as tmp:
        run = (run_ours if side == "ours" else run_trl)(method, steps, model, reward_dir, Path(tmp))
    return {"method": variant, **run}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    warm = slice(1, None) if len(run["step_seconds"]) > 1 else slice(None)
    step_s = median(run["step_seconds"][warm])
    rollout_s = sum(run["rollout_seconds"][warm])
    reward_s = sum(run["reward_seconds"][warm])
    tokens = sum(run["tokens"][warm])
    return {"method": run["method"], "config": run["config"], "samples_per_step": P * K, "max_new_tokens": MAX_NEW,
            "steps": len(run["step_seconds"]), "step_s": step_s, "update_steps_per_s": 1 / step_s,
            "rollout_s": median(run["rollout_seconds"][warm]), "rollout_tokens_per_s": tokens / rollout_s,
            "reward_s": median(run["reward_seconds"][warm]), "generation_tokens_per_s": tokens / (rollout_s - reward_s),
            "tokens_per_step": tokens / len(run["tokens"][warm]), "first_step_s": run["step_seconds"][0],
            "peak_mib": run["peak_mib"], "all_step_s": [round(t, 2) for t in run["step_seconds"]],
            "reward": [round(r, 3) for r in run["reward"]]}


def train_reward_model(folder: Path, model: str | None) -> None:
    from playground.models.sources import quiet_libraries

    quiet_libraries()
    from playground.core.home import data_dir
    from playground.data.rows import load_pairs
    from playground.models.roles import ModelsConfig, load_models
    from playground.training.reward_model import RewardConfig
    from playground.training.reward_model import train_reward_model as train

    models = load_models(ModelsConfig(sft=model, models_dir=data_dir() / "models"))
    result = train(models.sft.source, models.tokenizer, load_pairs(PROMPTS).rows, RewardConfig(steps=4, heldout=0),
                   device=models.device, dtype=models.dtype)
    assert result.model is not None
    result.model.save(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench rlhf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="rollouts per run (the first is not counted)")
    parser.add_argument("--model", help="an HF model folder to use instead of the packaged SmolLM2")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--reward-model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.model, args.reward_model)))
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        reward_dir = Path(tmp) / "rm"
        train_reward_model(reward_dir, args.model)
        rows = {}
        for variant in VARIANTS:
            cmd = [sys.executable, "-m", "cli", "bench", "rlhf", "--child", variant, "--steps", str(args.steps),
                   "--reward-model", str(reward_dir), *(["--model", args.model] if args.model else [])]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            if variant == FLOOR:
                floor = out["tokens"] / median(out["seconds"][1:] or out["seconds"])
                continue
            rows[variant] = summarize(out)
    ratios: dict[str, float] = {"generation_floor_tokens_per_s": floor}
    for method in ("rloo", "grpo"):
        ours, trl = rows[f"ours-{method}"], rows[f"trl-{method}"]
        ratios |= {f"update_steps_ours_over_trl_{method}": trl["step_s"] / ours["step_s"],
                   f"rollout_tokens_ours_over_trl_{method}": ours["rollout_tokens_per_s"] / trl["rollout_tokens_per_s"],
                   f"generation_tokens_ours_over_trl_{method}":
                       ours["generation_tokens_per_s"] / trl["generation_tokens_per_s"],
                   f"memory_ours_over_trl_{method}": ours["peak_mib"] / trl["peak_mib"],
                   # The most any sampler could get at these settings: generation at the floor, the
                   # reward model as measured (the same code on both sides).
                   f"generation_floor_over_trl_{method}": floor / trl["generation_tokens_per_s"],
                   f"rollout_bound_over_trl_{method}":
                       1 / (1 / floor + ours["reward_s"] / ours["tokens_per_step"]) / trl["rollout_tokens_per_s"]}
    report("rlhf", list(rows.values()), {"prompts_per_step": P, "samples_per_prompt": K, "beta": BETA, "lr": LR,
                                         **ratios}, load_before)

