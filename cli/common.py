"""What every command shares: the model flags, the training-run flags, progress bars, and how an
error becomes one `error: …` line.

Kept free of torch imports so `--help` answers instantly and hub access is decided before
transformers is imported.
"""

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from playground.core.beta import DEFAULT_BETA, check_beta
from playground.core.errors import PlaygroundError
from playground.models.sources import quiet_libraries, set_hub_access, use_hub


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps descriptions' line breaks; shows a default only where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, False) or "default:" in help_text:
            return help_text
        return super()._get_help_string(action) or help_text


def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("models (default: the packaged SmolLM2-135M-Instruct in every role)")
    g.add_argument("--sft", metavar="M", help="SFT model π_SFT: HF model folder, .gguf file or hub id "
                   "(default: packaged SmolLM2-135M-Instruct)")
    g.add_argument("--ref", metavar="M", help="reference π_ref (default: the SFT model, frozen; "
                   "same weights with the policy adapter disabled)")
    g.add_argument("--policy", metavar="M", help="policy π_θ: a LoRA adapter folder for the SFT model, or a "
                   "full model (default: SFT + a fresh LoRA adapter, equal to SFT until trained)")
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--dtype", default="auto", help="auto (bfloat16 on cuda, float32 elsewhere), float32, "
                   "bfloat16 or float16")


def beta_value(text: str) -> float:
    """`--beta`'s type: the engine's one check of β (`check_beta`), as an argparse error."""
    try:
        return check_beta(float(text))
    except (ValueError, PlaygroundError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_beta_arg(group: argparse.ArgumentParser | argparse._ArgumentGroup, help_text: str) -> None:
    """`--beta`, defaulting to the engine's `DEFAULT_BETA` and checked as the engine checks it."""
    group.add_argument("--beta", type=beta_value, default=DEFAULT_BETA, metavar="β", help=help_text)


DB_LOCK_HELP = ("vote database whose training lock the run holds, so that it never publishes over an app replica's "
                "run or another command's: a SQLite file or a postgresql:// URL (default: $PLAYGROUND_DB_URL, else "
                "$PLAYGROUND_HOME/votes.sqlite)")


def add_run_args(parser: argparse.ArgumentParser, out_help: str, lr: float, batch_size: int, heldout: float,
                 max_length: int, seed_help: str) -> argparse._ArgumentGroup:
    """The flags every training CLI shares (pairs in, a folder out, run length, optimizer basics);
    returns the "training" group for the run's own flags."""
    parser.add_argument("--pairs", required=True, type=Path, help="input: JSONL, Parquet or CSV of TRL preference rows")
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps (default: 3 epochs)")
    length.add_argument("--epochs", type=float, help="passes over the training pairs; may be fractional "
                        "(default: 3)")
    t = parser.add_argument_group("training")
    t.add_argument("--lr", type=float, default=lr, help="AdamW learning rate, constant (LoRA-sized)")
    t.add_argument("--batch-size", type=int, default=batch_size, help="pairs per optimizer step")
    t.add_argument("--heldout", type=float, default=heldout, metavar="FRACTION",
                   help="share of pairs held out for accuracy/margin before and after (none below 5 pairs)")
    t.add_argument("--max-length", type=int, default=max_length,
                   help="tokens per prompt+completion; longer rows are cut (completion end first)")
    t.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default: 0)")
    t.add_argument("--skip-invalid", action="store_true",
                   help="skip bad rows (reported with their line numbers) instead of failing")
    t.add_argument("--db", metavar="PATH|URL", help=DB_LOCK_HELP)
    return t


@contextmanager
def training_lock(db: str | None, take: bool = True) -> Iterator[None]:
    """Hold the training lock of the vote database `db` (`--db`, else $PLAYGROUND_DB_URL, else the
    default location) while the block runs: one run at a time over every app replica and command on
    that database. Refused as the app refuses while another holds it. `take=False` holds nothing: the
    other processes of an accelerate launch, whose main process holds it."""
    if not take:
        yield
        return
    from playground.data.db import LockHolder, open_backend
    from playground.data.store import db_location

    database = open_backend(db_location(db))
    try:
        lock = database.training_lock()
        if not lock.acquire(blocking=False):
            holder = lock.holder() or LockHolder("", 0, time.time())  # let go a moment ago: still refused
            raise PlaygroundError(holder.refusal())
        try:
            yield
        finally:
            lock.release()
    finally:
        database.close()


@contextmanager
def step_bar(first: str, accuracy: str, margin: str) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """A tqdm bar for a training run, as its `callback`: described by `first` (the pass before step
    1), then "training" with the step's loss and its `accuracy` and `margin` metrics."""
    from tqdm import tqdm

    with tqdm(desc=first, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(step: int, total: int, metrics: dict[str, float]) -> None:
            if step == 1:
                bar.reset(total=total)
                bar.set_description("training")
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics[accuracy]:.2f}",
                            margin=f"{metrics[margin]:+.3f}", refresh=False)
            bar.update(1)

        yield progress


def run_summary(result: Any, invalid: int, last: str) -> str:  # result: dpo.RunResult
    """What a finished training run prints: pairs, steps, held-out metrics, and `last` (where it went)."""
    before, after = result.heldout_before, result.heldout_after
    heldout = "none (fewer than 5 pairs, or --heldout 0)"
    if before and after:
        heldout = (f"accuracy {before.accuracy:.2f} → {after.accuracy:.2f}, "
                   f"margin {before.margin:+.4f} → {after.margin:+.4f} ({after.pairs} pairs)")
    return (
        f"pairs       {result.pairs} used: {result.train_pairs} train, {result.heldout_pairs} held out "
        f"({invalid} invalid rows skipped, {result.skipped} without a preference, {result.truncated} truncated)\n"
        f"steps       {len(result.steps)} in {result.seconds:.1f} s ({result.pairs_per_second:.2f} pairs/s, "
        f"final loss {result.steps[-1]['loss']:.4f})\n"
        f"held out    {heldout}\n"
        f"{last}"
    )


def prepare_environment(args: argparse.Namespace) -> None:
    """Switch the hub off unless a flag names a hub id; must run before transformers is imported."""
    specs = [args.sft, args.ref, args.policy]
    set_hub_access(use_hub(specs, ["sft", "ref", "policy"]))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_libraries()


def models_config(args: argparse.Namespace, data_dir: Path):  # -> ModelsConfig (lazy import keeps --help fast)
    from playground.models.roles import ModelsConfig

    return ModelsConfig(sft=args.sft, reference=args.ref, policy=args.policy, device=args.device,
                        dtype=args.dtype, models_dir=data_dir / "models")


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run an entry point: a `PlaygroundError` becomes one `error: …` line and exit code 1."""
    try:
        code = main()
    except PlaygroundError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
