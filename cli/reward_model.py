"""`playground reward-model`: train a Bradley–Terry reward model on TRL preference pairs."""

import argparse
import sys
import textwrap

from cli.common import (
    HelpFormatter,
    add_run_args,
    models_config,
    prepare_environment,
    run_summary,
    step_bar,
    training_lock,
)
from playground.core.errors import PlaygroundError

# RewardConfig's defaults, written out: importing the engine here would import transformers before
# `prepare_environment` decides hub access, and make --help slow (tests/test_reward_model.py pins them).
LR, BATCH_SIZE, HELDOUT, MAX_LENGTH = 5e-4, 4, 0.2, 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="playground reward-model",
        description=textwrap.fill(
            "Train a Bradley–Terry reward model r(x, y) = w·h_last + b (the SFT model with LoRA and a scalar head) "
            "on preference pairs (TRL rows), loss −log σ(r(x, y⁺) − r(x, y⁻)). A share of the pairs is held out to "
            "report accuracy and margin before and after. The model is written to --out only when the run "
            "finishes; a failed or interrupted run writes nothing.", 100),
        formatter_class=HelpFormatter,
    )
    add_run_args(parser, "new folder for the reward model (must not exist)", lr=LR, batch_size=BATCH_SIZE,
                 heldout=HELDOUT, max_length=MAX_LENGTH,
                 seed_help="seed for LoRA init, shuffling and the held-out split")
    parser.add_argument("--sft", metavar="M", help="base model: HF model folder, .gguf file or hub id "
                        "(default: packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on cuda, float32 elsewhere), float32, "
                        "bfloat16 or float16")
    parser.set_defaults(ref=None, policy=None)  # the roles this command does not use stay at their defaults
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_environment(args)

    from playground.core.home import data_dir
    from playground.data.rows import load_pairs
    from playground.models.roles import load_models
    from playground.training.reward_model import RewardConfig, train_reward_model

    cfg = RewardConfig(lr=args.lr, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                       max_length=args.max_length, seed=args.seed, heldout=args.heldout).validate()
    if args.out.exists():
        raise PlaygroundError(f"--out {args.out}: already exists; give a new folder")
    loaded = load_pairs(args.pairs, skip_invalid=args.skip_invalid)
    for err in loaded.skipped:
        print(f"skipped {err}", file=sys.stderr)
    # load_models resolves --sft (packaged default, GGUF conversion, hub id) as every entry point
    # does; only the resolved location, tokenizer, device and dtype are kept.
    models = load_models(models_config(args, data_dir()))
    base, tokenizer, device, dtype = models.sft.source, models.tokenizer, models.device, models.dtype
    del models

    with training_lock(args.db), step_bar("held-out pass", "accuracy", "margin") as progress:
        result = train_reward_model(base, tokenizer, loaded.rows, cfg, callback=progress, device=device, dtype=dtype)
    if result.model is None:  # cannot happen without should_stop; keeps the type checker honest
        raise PlaygroundError("training was cancelled; nothing was written")
    folder = result.model.save(args.out)
    print(run_summary(result, len(loaded.skipped), f"model       {folder}"))
    return 0

