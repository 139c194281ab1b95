"""Reference log-prob pass: ours (batched, one sequence at a time) against TRL 1.16's, same work timed.

`playground bench scoring [--pairs 12] [--repeats 5]` — same pairs, same real SmolLM2 weights
(float32 on CPU), same device, same 2×`--batch-pairs` sequences a forward, one process.

The headline compares the reference pass itself, tokenized input in, summed log-probs out:
- ours: `Scorer.token_logps(models.reference, encoded)` (length-sorted batches, vocabulary
  projection at completion positions only);
- TRL: the loop of `DPOTrainer._precompute_ref_logps` — its DataLoader with the trainer's collator
  and `compute_ref_log_probs` on each batch — without the Arrow cache file that function writes
  afterwards (a few milliseconds for these sizes).
Set-up is timed apart: our tokenization (`Scorer.encode`) and TRL's `DPOTrainer(...)` construction
with `precompute_ref_log_probs=False` (chat template and tokenization by `datasets.map`, accelerate
preparation); the copies of the model TRL is given are made outside every timed region. The last
row is `DPOTrainer(...)` with `precompute_ref_log_probs=True` as a user runs it: set-up, the pass,
hashing the weights and the cache write — what the earlier figures (CPU 1.73×, H100 9.8×) timed.

Every method runs once untimed (warm-up), then `--repeats` rounds run all methods in turn, the
order reversed every other round (A B …, … B A); each figure is the median of its rounds. The two
passes must agree: the largest difference between our summed log-prob and TRL's is reported.
"""

import argparse
import copy
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from bench.common import alternate, load_default_models, median, report
from bench.synthetic import chat_pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench scoring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=12, help="number of synthetic conversational pairs")
    parser.add_argument("--batch-pairs", type=int, default=8, help="pairs per forward (sequences = 2×)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of every method (median kept)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    models = load_default_models()
    import datasets

    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference-pass progress bar reads this
    from playground.scoring.scorer import Scorer

    pairs = chat_pairs(args.pairs)
    seqs = 2 * args.batch_pairs
    batched, single = Scorer(models, batch_size=seqs), Scorer(models, batch_size=1)
    encoded = [row for p, c, r in pairs for row in batched.encode(p, [c, r])]
    base = copy.deepcopy(models.policy.model).unload()  # the same weights, without LoRA, for TRL
    # A trained policy (weights and identity of its own), so `score_pairs` runs its policy pass as it
    # does after training; a fresh adapter would share the reference's (`Scorer.policy_is_reference`).
    with torch.no_grad():
        for name, p in models.policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    models.policy = replace(models.policy, ident=f"{models.policy.ident}+bench")
    with tempfile.TemporaryDirectory() as out:
        # TRL patches the models it is given (a fused LM head), so it only ever gets copies of `base`.
        two_copies = lambda: (copy.deepcopy(base), copy.deepcopy(base))  # noqa: E731 (made untimed)
        batch_pairs = args.batch_pairs
        trainer = trl_trainer(models, *two_copies(), pairs, batch_pairs, out, precompute=False)
        trl_sums = trl_reference_pass(trainer)
        ours_sums = torch.stack([lp.sum() for lp in batched.token_logps(models.reference, encoded)])
        max_diff = (ours_sums.view(-1, 2) - trl_sums).abs().max().item()

        methods: dict[str, Callable[..., Any]] = {
            "ours_pass": lambda: batched.token_logps(models.reference, encoded),
            "trl_pass": lambda: trl_reference_pass(trainer),
            "ours_pass_single": lambda: single.token_logps(models.reference, encoded),
            "ours_tokenize": lambda: [batched.encode(p, [c, r]) for p, c, r in pairs],
            "ours_score_pairs": lambda: Scorer(models, batch_size=seqs).score_pairs(pairs, beta=0.1),
            "trl_init": lambda copies: trl_trainer(models, *copies, pairs, batch_pairs, out, False),
            "trl_init_precompute": lambda copies: trl_trainer(models, *copies, pairs, batch_pairs, out, True),
        }
        times = alternate(methods, args.repeats, {"trl_init": two_copies, "trl_init_precompute": two_copies})
    med = {name: median(ts) for name, ts in times.items()}
    n = len(pairs)
    labels = [
        ("ours_pass", f"ours, reference pass, batch {seqs} seqs", "pass"),
        ("trl_pass", f"TRL 1.16 reference pass (compute_ref_log_probs loop, batch {seqs} seqs)", "pass"),
        ("ours_pass_single", "ours, reference pass, one sequence at a time", "pass"),
        ("ours_tokenize", "ours, set-up: tokenization (Scorer.encode)", "set-up"),
        ("trl_init", "TRL, set-up: DPOTrainer(...) precompute_ref_log_probs=False", "set-up"),
        ("trl_init_precompute", "TRL DPOTrainer(...) precompute_ref_log_probs=True (set-up + pass + cache)",
         "set-up + pass"),
        ("ours_score_pairs", f"ours, tokenize + policy + reference (score_pairs), batch {seqs}",
         "set-up + 2 passes"),
    ]
    rows = [{"method": label, "timed": timed, "median_s": med[key], "pairs_per_s": n / med[key],
             "all_s": [round(t, 2) for t in times[key]]} for key, label, timed in labels]
    paired = sorted(t / o for t, o in zip(times["trl_pass"], times["ours_pass"], strict=True))
    report("scoring", rows, {
        "pairs": n, "sequences_per_batch": seqs, "repeats": args.repeats, "device": str(models.device),
        "dtype": str(models.dtype).removeprefix("torch."),
        "ours_over_trl_pass": med["trl_pass"] / med["ours_pass"],
        "ours_over_trl_pass_paired_median": median(paired),
        "ours_over_trl_incl_setup": med["trl_init_precompute"] / (med["ours_tokenize"] + med["ours_pass"]),
        "batched_over_single": med["ours_pass_single"] / med["ours_pass"],
        "max_abs_diff_summed_logp_ours_vs_trl": max_diff,
    }, load_before)


def trl_trainer(models, policy, ref, pairs, batch_pairs: int, out: str, precompute: bool):  # -> trl.DPOTrainer
    """TRL's trainer on the plain models `policy` and `ref` (float32 on CPU), no gradient checkpointing."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    # An in-memory Dataset: TRL's reference cache file gets a random name, so no run reads another's.
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs])
    cfg = DPOConfig(output_dir=out, bf16=False, gradient_checkpointing=False, use_cpu=models.device.type == "cpu",
                    precompute_ref_log_probs=precompute, per_device_train_batch_size=batch_pairs, report_to="none",
                    dataset_num_proc=None, disable_tqdm=True)
    return DPOTrainer(model=policy, ref_model=ref, args=cfg, train_dataset=data,
                      processing_class=models.tokenizer)


def trl_reference_pass(trainer) -> torch.Tensor:
    """(pairs, 2) summed reference log-probs: the loop of TRL 1.16's `DPOTrainer._precompute_ref_logps`
    (its DataLoader, collator and `compute_ref_log_probs`), without writing the cache file."""
    from torch.utils.data import DataLoader

    loader = trainer.accelerator.prepare(DataLoader(
        trainer.train_dataset, batch_size=trainer.args.per_device_train_batch_size, collate_fn=trainer.data_collator,
        num_workers=trainer.args.dataloader_num_workers, pin_memory=trainer.args.dataloader_pin_memory, shuffle=False))
    model = trainer.ref_model or trainer.model
    out = []
    for batch in loader:
        chosen, rejected = trainer.compute_ref_log_probs(model, batch)
        out.append(torch.stack([chosen.cpu(), rejected.cpu()], dim=1))
    return torch.cat(out)

