"""`playground rlhf`: RLHF's second half, PPO, RLOO or GRPO on the policy's LoRA adapter against a
trained reward model (`playground reward-model`), on a prompt file or a stored prompt set.

Writes a new checkpoint folder under --out (adapter + record.json, see `playground.training.rlhf`); pass it
to --policy of any entry point to use, or train further from, the result.
"""

import argparse
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from cli.common import HelpFormatter, add_model_args, models_config, prepare_environment, training_lock
from playground.core.errors import PlaygroundError

# RLHFConfig's defaults, written out: the engine is imported only after `prepare_environment` (module
# `playground.cli`); tests/test_rlhf.py pins these to RLHFConfig().
DEFAULTS = {"method": "rloo", "steps": 20, "beta": 0.05, "lr": 1e-4, "samples_per_prompt": 4, "batch_size": 4,
            "max_new_tokens": 48, "seed": 0, "clip_range": 0.2, "kl_penalty": "reward", "kl_target": None,
            "kl_horizon": 10_000, "heldout": 0.2, "max_grad_norm": 1.0, "max_length": 1024, "value_coef": 0.1,
            "value_clip": 0.2, "gae_lambda": 0.95, "gamma": 1.0, "ppo_epochs": 4, "minibatches": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = DEFAULTS
    parser = argparse.ArgumentParser(
        prog="playground rlhf",
        description=textwrap.fill(
            "Optimise the policy's LoRA adapter online for E[r(x, y)] − β·KL(π_θ ‖ π_ref), r a trained reward "
            "model: each step samples K responses per prompt (T = 1), scores them, and takes the method's update "
            "(ppo: clipped surrogate with a value head and GAE; rloo: REINFORCE with the leave-one-out baseline; "
            "grpo: group-normalised advantages, clipped). The KL penalty is −β·log(π_θ/π_ref) at every token. A "
            "share of the prompts is held out: the reward of greedy answers to them is reported before and after. "
            "The checkpoint is written only when the run finishes; a failed or interrupted run writes nothing.",
            100),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--reward-model", required=True, type=Path, metavar="DIR",
                        help="a reward-model folder (playground reward-model --out DIR)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", type=Path, metavar="FILE", help="prompts: a prompt-set file (JSONL, CSV or "
                        "Parquet, a `prompt` per row) or a TRL preference file (its prompts)")
    source.add_argument("--set", metavar="NAME", help="prompts: the stored prompt set NAME (see --db)")
    parser.add_argument("--db", metavar="PATH|URL", help="vote database holding --set, and whose training lock the "
                        "run holds (one run at a time with the app's replicas and other commands): a SQLite file or "
                        "a postgresql:// URL (default: $PLAYGROUND_DB_URL, else $PLAYGROUND_HOME/votes.sqlite)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoints folder; the run adds <out>/<id>/")
    t = parser.add_argument_group("training")
    t.add_argument("--method", default=d["method"], choices=["ppo", "rloo", "grpo"], help="the policy update")
    t.add_argument("--steps", type=int, default=d["steps"], help="rollouts (rloo, grpo: one optimizer step each)")
    t.add_argument("--beta", type=float, default=d["beta"], help="β: KL strength; > 0 (the start value with "
                   "--kl-target)")
    t.add_argument("--lr", type=float, default=d["lr"], help="AdamW learning rate, constant (LoRA-sized)")
    t.add_argument("--samples-per-prompt", type=int, default=d["samples_per_prompt"], metavar="K",
                   help="responses sampled per prompt and step (≥ 2 for rloo and grpo)")
    t.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"], help="tokens per sampled response")
    t.add_argument("--batch-size", type=int, default=d["batch_size"], metavar="P", help="prompts per step")
    t.add_argument("--seed", type=int, default=d["seed"], help="seed for prompt order, the held-out split, "
                   "sampling and PPO's minibatches (default: 0)")
    t.add_argument("--clip-range", type=float, default=d["clip_range"], metavar="ε",
                   help="ε of the clipped surrogate, in (0, 1)")
    t.add_argument("--kl-penalty", default=d["kl_penalty"], choices=["reward", "loss"],
                   help="where β·KL enters: the reward (the RLHF objective), or, grpo only, the loss as TRL's "
                   "GRPOTrainer does (k3 per token)")
    t.add_argument("--kl-target", type=float, default=d["kl_target"], metavar="NATS",
                   help="adaptive KL: β moves toward this KL per response (Ziegler et al.; default: β fixed)")
    t.add_argument("--kl-horizon", type=int, default=d["kl_horizon"], help="adaptive KL's horizon in samples")
    t.add_argument("--heldout", type=float, default=d["heldout"], metavar="FRACTION",
                   help="share of prompts held out for the reward of greedy answers before/after (none below 5)")
    t.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"],
                   help="clip the gradient to this L2 norm")
    t.add_argument("--max-length", type=int, default=d["max_length"],
                   help="tokens of prompt + --max-new-tokens; a longer prompt is refused")
    p = parser.add_argument_group("ppo (--method ppo only)")
    p.add_argument("--value-coef", type=float, default=d["value_coef"], help="weight of the value loss")
    p.add_argument("--value-clip", type=float, default=d["value_clip"], help="clip range of the value loss")
    p.add_argument("--gae-lambda", type=float, default=d["gae_lambda"], metavar="λ", help="GAE's λ in [0, 1]")
    p.add_argument("--gamma", type=float, default=d["gamma"], metavar="γ", help="discount γ in (0, 1]")
    p.add_argument("--ppo-epochs", type=int, default=d["ppo_epochs"], help="passes over each rollout")
    p.add_argument("--minibatches", type=int, default=d["minibatches"], help="optimizer steps per pass")
    add_model_args(parser)
    return parser.parse_args(argv)


def load_prompts(args: argparse.Namespace) -> list:  # -> list[Prompt]
    """The prompts as chat messages, from --prompts or the stored --set."""
    from playground.data.db import parse_location
    from playground.data.prompt_sets import load_prompt_file
    from playground.data.store import db_location, open_store

    if args.prompts is not None:
        return [list(p.messages) for p in load_prompt_file(args.prompts)]
    db = db_location(args.db)
    path = parse_location(db).path
    if path is not None and not path.is_file():  # a server says itself what is wrong
        raise PlaygroundError(f"{path}: no vote database there (import the set first, or a wrong --db?)")
    with open_store(db) as store:
        return [list(p.messages) for p in store.prompt_sets.prompts(store.prompt_sets.get(args.set).id)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_environment(args)

    from playground.core.home import data_dir
    from playground.models.roles import load_models
    from playground.training.reward_model import load_reward_model
    from playground.training.rlhf import RLHFConfig, train_rlhf
    from playground.training.trainee import adapter_lora_settings

    cfg = RLHFConfig(**{name: getattr(args, name) for name in DEFAULTS}).validate()
    if args.out.exists() and not args.out.is_dir():
        raise PlaygroundError(f"--out {args.out}: exists and is not a folder")
    prompts = load_prompts(args)

    def progress(step: int, total: int, m: dict[str, float]) -> None:
        print(f"step {step}/{total}  reward {m['reward']:+.3f}  kl {m['kl']:+.3f}  entropy {m['entropy']:.3f}  "
              f"loss {m['loss']:+.4f}  clip {m['clip_fraction']:.2f}  length {m['response_length']:.1f}  "
              f"({m['seconds']:.1f} s)", file=sys.stderr)

    with training_lock(args.db):
        models = load_models(models_config(args, data_dir()))
        if models.policy.adapter is not None:
            cfg = replace(cfg, lora=adapter_lora_settings(models.policy.model))
        reward_model = load_reward_model(args.reward_model, device=models.device, dtype=models.dtype)
        result = train_rlhf(models, prompts, reward_model, cfg, args.out, callback=progress,
                            reward_model_path=args.reward_model)
    before, after = result.heldout_before, result.heldout_after
    heldout = "none (fewer than 5 prompts, or --heldout 0)"
    if before and after:
        heldout = (f"greedy reward {before.reward:+.3f} → {after.reward:+.3f}, length {before.length:.1f} → "
                   f"{after.length:.1f} tokens ({after.prompts} prompts)")
    last = result.steps[-1]
    print(f"prompts     {result.prompts}: {result.train_prompts} train, {result.heldout_prompts} held out\n"
          f"steps       {len(result.steps)} {cfg.method} in {result.seconds:.1f} s "
          f"(last: reward {last['reward']:+.3f}, KL {last['kl']:+.3f} nats)\n"
          f"held out    {heldout}\n"
          f"checkpoint  {result.checkpoint}")
    return 0

