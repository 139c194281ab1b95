"""`playground score`: score TRL preference pairs under policy and reference.

Every output row keeps the input's fields and adds the columns in `SCORE_COLUMNS`.
"""

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cli.common import HelpFormatter, add_beta_arg, add_model_args, models_config, prepare_environment
from playground.core.errors import PlaygroundError

SCORE_COLUMNS = {
    "logp_policy_chosen": "log π_θ(chosen | prompt): sum of the chosen completion's token log-probs under the policy",
    "logp_policy_rejected": "log π_θ(rejected | prompt) under the policy",
    "logp_ref_chosen": "log π_ref(chosen | prompt) under the reference",
    "logp_ref_rejected": "log π_ref(rejected | prompt) under the reference",
    "reward_chosen": "implicit reward β·(log π_θ − log π_ref) of the chosen completion",
    "reward_rejected": "implicit reward of the rejected completion",
    "reward_margin": "reward_chosen − reward_rejected (> 0: the policy already prefers chosen, relative to π_ref)",
    "p_chosen": "Bradley–Terry probability σ(reward_margin) that chosen is preferred",
    "dpo_loss": "DPO loss −log σ(reward_margin) = −log p_chosen",
    "n_tokens_chosen": "completion tokens scored for chosen (end-of-turn/EOS included)",
    "n_tokens_rejected": "completion tokens scored for rejected",
    "truncated": "true when the row was longer than --max-length and was cut (counted in the summary)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="playground score",
        description="Score preference pairs (TRL rows: prompt/chosen/rejected, strings or chat messages)\n"
        "with the policy and reference: log-probs, implicit rewards, Bradley–Terry probability, DPO loss.",
        epilog="Output: every input field, plus\n" + "\n".join(f"  {k}: {v}" for k, v in SCORE_COLUMNS.items()),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--pairs", required=True, type=Path, help="input: JSONL, Parquet or CSV of TRL preference rows")
    parser.add_argument("--out", required=True, type=Path,
                        help="output .jsonl or .parquet (written only if every row is valid)")
    add_beta_arg(parser, "β in r = β·log(π_θ/π_ref); must be > 0")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (≥ 1)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate prompt+completion to this many tokens (default: the model's context)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip bad rows (reported with their line numbers) instead of failing")
    add_model_args(parser)
    args = parser.parse_args(argv)
    if args.out.suffix.lower() not in (".jsonl", ".parquet"):
        parser.error(f"--out {args.out}: must end in .jsonl or .parquet, to say which format")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be ≥ 1")
    if args.max_length is not None and args.max_length < 2:
        parser.error(f"--max-length {args.max_length}: must be ≥ 2")
    return args


def scored_rows(rows: list, scores: list) -> Iterator[dict[str, Any]]:
    for row, s in zip(rows, scores, strict=True):
        yield {
            **row.as_trl(),
            "logp_policy_chosen": s.chosen.logp_policy,
            "logp_policy_rejected": s.rejected.logp_policy,
            "logp_ref_chosen": s.chosen.logp_ref,
            "logp_ref_rejected": s.rejected.logp_ref,
            "reward_chosen": s.chosen.reward,
            "reward_rejected": s.rejected.reward,
            "reward_margin": s.reward_margin,
            "p_chosen": s.p_chosen,
            "dpo_loss": s.dpo_loss,
            "n_tokens_chosen": s.chosen.n_tokens,
            "n_tokens_rejected": s.rejected.n_tokens,
            "truncated": s.chosen.truncated or s.rejected.truncated,
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_environment(args)
    import torch
    from tqdm import tqdm

    from playground.core.home import data_dir
    from playground.data.exchange import write_rows
    from playground.data.rows import load_pairs
    from playground.models.roles import load_models
    from playground.objectives import reward_accuracy
    from playground.scoring.scorer import Scorer

    loaded = load_pairs(args.pairs, skip_invalid=args.skip_invalid)
    for err in loaded.skipped:
        print(f"skipped {err}", file=sys.stderr)
    if not loaded.rows:
        raise PlaygroundError(f"{args.pairs}: no valid rows to score")
    if not args.out.parent.exists():
        raise PlaygroundError(f"--out {args.out}: folder {args.out.parent} does not exist")
    models = load_models(models_config(args, data_dir()))
    scorer = Scorer(models, batch_size=args.batch_size, max_length=args.max_length)
    started = time.perf_counter()
    with tqdm(total=4 * len(loaded.rows), desc="scoring", unit="seq", file=sys.stderr) as bar:
        triples = [(r.prompt, r.chosen, r.rejected) for r in loaded.rows]
        scores = scorer.score_pairs(triples, args.beta, progress=bar.update)
    elapsed = time.perf_counter() - started
    write_rows(list(scored_rows(loaded.rows, scores)), args.out)
    n = len(scores)
    accuracy = reward_accuracy(torch.tensor([s.reward_margin for s in scores]))
    truncated = sum(s.chosen.truncated or s.rejected.truncated for s in scores)
    print(
        f"scored {n} pairs ({len(loaded.skipped)} skipped, {truncated} truncated) in {elapsed:.1f} s "
        f"({n / elapsed:.2f} pairs/s) → {args.out}\n"
        f"reward accuracy {accuracy:.3f}  mean margin {sum(s.reward_margin for s in scores) / n:+.4f}  "
        f"mean DPO loss {sum(s.dpo_loss for s in scores) / n:.4f}  (β = {args.beta}, policy: {models.policy.source})",
        file=sys.stderr,
    )
    return 0

