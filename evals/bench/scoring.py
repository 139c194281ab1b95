"""Pairs/s of scoring: batched versus one pair at a time versus TRL's reference-log-prob pass.

`python -m evals.bench.scoring [--pairs 64]` — same pairs, same real SmolLM2 model, same device,
measured side by side in one run. Each figure includes tokenization. TRL's figure is its
`DPOTrainer` set-up with `precompute_ref_log_probs=True` (tokenize + one reference pass), the
work our "reference pass" row does.
"""

import argparse
import copy
import tempfile
import time

from evals.bench.common import load_default_models, report
from evals.bench.synthetic import chat_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64, help="number of synthetic conversational pairs")
    parser.add_argument("--batch-pairs", type=int, default=8, help="pairs per forward (sequences = 2×)")
    args = parser.parse_args()

    models = load_default_models()
    from playground.scoring.scorer import Scorer

    pairs = chat_pairs(args.pairs)
    seqs = 2 * args.batch_pairs

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def ref_pass(batch_size: int) -> None:
        scorer = Scorer(models, batch_size=batch_size)
        encoded, keys = [], []
        for i, (p, c, r) in enumerate(pairs):
            encoded += scorer.encode(p, [c, r])
            keys += [f"{i}:c", f"{i}:r"]
        scorer.reference_token_logps(keys, encoded)

    timed(lambda: ref_pass(seqs))  # warm-up: first-call allocations
    ours_ref = timed(lambda: ref_pass(seqs))
    ours_single = timed(lambda: ref_pass(1))
    ours_both = timed(lambda: Scorer(models, batch_size=seqs).score_pairs(pairs, beta=0.1))
    trl = trl_precompute_seconds(models, pairs, args.batch_pairs)
    n = len(pairs)
    rows = [
        {"method": f"ours, reference pass, batch {seqs} seqs", "seconds": ours_ref, "pairs_per_s": n / ours_ref},
        {"method": "ours, reference pass, one sequence at a time", "seconds": ours_single,
         "pairs_per_s": n / ours_single},
        {"method": "TRL 1.16 precompute_ref_log_probs (same batch)", "seconds": trl, "pairs_per_s": n / trl},
        {"method": f"ours, policy + reference (score_pairs), batch {seqs}", "seconds": ours_both,
         "pairs_per_s": n / ours_both},
    ]
    report("scoring", rows, {"pairs": n, "device": str(models.device), "batched_over_single": ours_single / ours_ref,
                             "ours_over_trl": trl / ours_ref})


def trl_precompute_seconds(models, pairs, batch_pairs: int) -> float:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    base = copy.deepcopy(models.policy.model).unload()
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs])
    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(output_dir=out, bf16=False, gradient_checkpointing=False, use_cpu=models.device.type == "cpu",
                        precompute_ref_log_probs=True, per_device_train_batch_size=batch_pairs, report_to="none",
                        dataset_num_proc=None)
        start = time.perf_counter()
        DPOTrainer(model=base, ref_model=copy.deepcopy(base), args=cfg, train_dataset=data,
                   processing_class=models.tokenizer)
        return time.perf_counter() - start


if __name__ == "__main__":
    main()
