"""`playground train`: one DPO (or IPO, hinge, robust, KTO, SimPO, ORPO) update of the policy's
LoRA adapter from TRL preference pairs, and for KTO also TRL's unpaired rows (prompt, completion, label).

Writes a new checkpoint folder under --out (adapter + record.json, see `playground.models.checkpoints`);
pass that folder to --policy of any entry point to use, or train further from, the result.

`--engine trl` trains the same pairs and settings with TRL's DPOTrainer instead
(`playground.training.trl_engine`), in one process or several under `accelerate launch`.
"""

import argparse
import math
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from cli.common import (
    HelpFormatter,
    add_model_args,
    add_run_args,
    models_config,
    prepare_environment,
    run_summary,
    step_bar,
    training_lock,
)
from playground.core.beta import DEFAULT_BETA
from playground.core.errors import PlaygroundError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="playground train",
        description=textwrap.fill(
            "Train the policy's LoRA adapter with DPO on preference pairs (TRL rows: prompt/chosen/rejected, strings "
            "or chat messages), against the frozen reference. Loss per pair: −log σ(r_w − r_l), r = β·log(π_θ/π_ref) "
            "(or --loss ipo/hinge/robust/kto/simpo/orpo; KTO also reads unpaired rows: prompt/completion/label). A "
            "share of the pairs is held out to report implicit-reward accuracy and margin, and the log-prob margin, "
            "before and after. The checkpoint is written only when the run finishes; a failed or interrupted run "
            "writes nothing.", 100) + "\n\n" + textwrap.fill(
            "--engine trl: the same run by TRL's DPOTrainer (peft LoRA; losses sigmoid, ipo, hinge, robust), the same "
            "checkpoint folder. Several processes (GPUs) with accelerate: accelerate launch --config_file "
            "configs/accelerate/ddp.yaml -m cli train --engine trl ... (or deepspeed-zero2.yaml; --batch-size "
            "is the global batch, split evenly across processes). Needs the dev requirements "
            "(pip install -r requirements-dev.txt).", 100),
        formatter_class=HelpFormatter,
    )
    # DPOConfig's defaults, written out: the engine is imported only after `prepare_environment` (module
    # `playground.cli`); tests/test_dpo.py pins these to DPOConfig() and LOSSES.
    t = add_run_args(parser, "checkpoints folder; the run adds <out>/<id>/", lr=5e-4, batch_size=4, heldout=0.2,
                     max_length=1024, seed_help="seed for shuffling and the held-out split")
    t.add_argument("--engine", default="ours", choices=["ours", "trl"],
                   help="ours: this package's trainer (also what the app runs); trl: TRL's DPOTrainer, the same pairs "
                   "and settings, runnable under accelerate launch (multi-GPU DDP, DeepSpeed)")
    # Checked by DPOConfig.validate with every other setting (the engine's one check of β).
    t.add_argument("--beta", type=float, default=DEFAULT_BETA, metavar="β",
                   help="β: KL strength in r = β·log(π_θ/π_ref); > 0")
    t.add_argument("--loss", default="sigmoid", choices=["sigmoid", "ipo", "hinge", "robust", "kto", "simpo", "orpo"],
                   help="sigmoid: DPO −log σ(Δr); ipo: (Δ per-token log-ratio − 1/(2β))²; hinge: max(0, 1 − Δr); "
                   "robust: DPO for labels flipped with probability --label-smoothing; kto: each answer alone, "
                   "desirable (chosen, 👍) or undesirable (rejected, 👎), against a batch KL reference point; "
                   "simpo: −log σ(β·Δ per-token log-prob − γ), no reference; orpo: NLL of chosen + λ·odds-ratio "
                   "loss, no reference")
    t.add_argument("--label-smoothing", type=float, default=0.0, metavar="ε",
                   help="ε in [0, 0.5): assumed label-flip rate, --loss robust only")
    t.add_argument("--simpo-gamma", type=float, default=0.5, metavar="γ",
                   help="SimPO's target margin γ ≥ 0, --loss simpo only (its paper: β ≈ 2, γ/β ≈ 0.5)")
    t.add_argument("--orpo-lambda", type=float, default=0.1, metavar="λ",
                   help="weight λ > 0 of ORPO's odds-ratio term, --loss orpo only")
    t.add_argument("--kto-desirable-weight", type=float, default=1.0, metavar="λ_D",
                   help="KTO's weight on desirable answers, --loss kto only")
    t.add_argument("--kto-undesirable-weight", type=float, default=1.0, metavar="λ_U",
                   help="KTO's weight on undesirable answers, --loss kto only (TRL: keep λ_D·n_D/(λ_U·n_U) "
                   "in [1, 4/3])")
    t.add_argument("--unpaired", type=Path, metavar="FILE",
                   help="--loss kto only: also train on TRL unpaired rows (prompt, completion, label) from FILE; "
                   "--pairs itself may hold such rows too")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the adapter's gradient to this L2 norm")
    lo = parser.add_argument_group("LoRA (default: the --policy adapter's own settings, else r=16, alpha=2r, "
                                   "q/k/v/o projections)")
    lo.add_argument("--lora-r", type=int, help="LoRA rank r (a fresh adapter gets it; a --policy adapter must "
                    "match it)")
    lo.add_argument("--lora-alpha", type=int, help="LoRA alpha, the update is scaled by alpha/r (default: 2r)")
    lo.add_argument("--lora-targets", help="comma-separated module names the adapter wraps "
                    "(default: q_proj,k_proj,v_proj,o_proj)")
    add_model_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_environment(args)

    from playground.core.home import data_dir
    from playground.data.rows import holds_unpaired, load_pairs, load_unpaired
    from playground.models.roles import LoraSettings, load_models
    from playground.training.dpo import DPOConfig, train_dpo
    from playground.training.trainee import adapter_lora_settings
    from playground.training.trl_engine import (
        check_loss,
        is_main_process,
        process_device,
        require_deepspeed_if_asked,
        require_trl,
        train_with_trl,
    )

    lora_given = any(v is not None for v in (args.lora_r, args.lora_alpha, args.lora_targets))
    r = args.lora_r or LoraSettings.r
    lora = LoraSettings(
        r=r, alpha=args.lora_alpha or 2 * r,
        targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()) if args.lora_targets
        else LoraSettings.targets,
    )
    cfg = DPOConfig(
        beta=args.beta, lr=args.lr, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, lora=lora,
        max_length=args.max_length, seed=args.seed, loss=args.loss, label_smoothing=args.label_smoothing,
        heldout=args.heldout, max_grad_norm=args.max_grad_norm, simpo_gamma=args.simpo_gamma,
        orpo_lambda=args.orpo_lambda, kto_desirable_weight=args.kto_desirable_weight,
        kto_undesirable_weight=args.kto_undesirable_weight,
    ).validate()
    trl = args.engine == "trl"
    if trl:
        check_loss(cfg)
        require_trl()
        require_deepspeed_if_asked()
        args.device = str(process_device(args.device))  # under accelerate launch: this process's own device
    if args.out.exists() and not args.out.is_dir():
        raise PlaygroundError(f"--out {args.out}: exists and is not a folder")
    if args.unpaired and cfg.loss != "kto":
        raise PlaygroundError(f"--unpaired rows train only with --loss kto, not {cfg.loss}")
    unpaired_pairs = holds_unpaired(args.pairs)
    if unpaired_pairs and cfg.loss != "kto":
        raise PlaygroundError(f"{args.pairs}: unpaired rows (prompt, completion, label) train only with --loss kto")
    loaded = [(load_unpaired if unpaired_pairs else load_pairs)(args.pairs, skip_invalid=args.skip_invalid)]
    if args.unpaired:
        loaded.append(load_unpaired(args.unpaired, skip_invalid=args.skip_invalid))
    for err in (e for part in loaded for e in part.skipped):
        print(f"skipped {err}", file=sys.stderr)
    pairs = [] if unpaired_pairs else loaded[0].rows
    unpaired = [row for part in loaded[int(not unpaired_pairs):] for row in part.rows]
    import torch

    # Under accelerate launch the main process holds the lock for all of them (and writes the checkpoint).
    with training_lock(args.db, take=is_main_process() if trl else True):
        # A fresh adapter's LoRA A is drawn at random: seeding makes a run repeatable, and makes the
        # processes of an accelerate launch (and a one-process run) start from the same adapter.
        torch.manual_seed(cfg.seed)
        models = load_models(replace(models_config(args, data_dir()), lora=lora))
        if not lora_given and models.policy.adapter is not None:
            cfg = replace(cfg, lora=adapter_lora_settings(models.policy.model))

        with step_bar("TRL set-up" if trl else "reference pass", "rewards/accuracies", "rewards/margins") as progress:
            # A KTO step has no accuracy, and no margin without both kinds of answer: the bar shows nan.
            def on_step(step: int, total: int, m: dict[str, float]) -> None:
                progress(step, total, {"rewards/accuracies": math.nan, "rewards/margins": math.nan, **m})

            result = (train_with_trl(models, pairs, cfg, args.out, callback=on_step) if trl
                      else train_dpo(models, pairs, cfg, args.out, unpaired=unpaired, callback=on_step))
    if result.checkpoint is None:  # another process of an accelerate launch: the main one reports
        return 0
    before, after = result.heldout_logps_before, result.heldout_logps_after
    logps = (f"log-prob    held-out margin log π(y_w) − log π(y_l) {before.margin:+.3f} → {after.margin:+.3f}\n"
             if before and after else "")
    trained_on = f"unpaired    {result.unpaired} rows beside the pairs' answers\n" if cfg.loss == "kto" else ""
    print(run_summary(result, sum(len(part.skipped) for part in loaded),
                      f"{logps}{trained_on}checkpoint  {result.checkpoint}"))
    return 0

