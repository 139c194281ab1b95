"""`playground data`: export the votes as preference data; import preference pairs;
import prompt sets for the voting queue and pre-generate their responses."""


import argparse
import sys
from pathlib import Path

from cli.common import add_beta_arg, add_model_args, models_config, prepare_environment
from playground.core.errors import PlaygroundError
from playground.data.db import parse_location
from playground.data.exchange import (
    EXPORT_FORMATS,
    MERGES,
    export_rows,
    import_file,
    import_prompts,
    meta_path,
)
from playground.data.merge import TIE_POLICIES
from playground.data.rows import FORMATS as IMPORT_FORMATS
from playground.data.store import DB_NAME, DB_URL_ENV, db_location, open_store


def _export(args: argparse.Namespace) -> None:
    db = db_location(args.db)
    path = parse_location(db).path
    if path is not None and not path.is_file():  # a server is asked, and says itself what is wrong
        raise PlaygroundError(f"{path}: no vote database there (nothing voted yet, or a wrong --db?)")
    with open_store(db) as store:
        n = export_rows(store, args.format, args.out, args.binarize.replace("-", "_"), args.seed,
                        args.include_imported, args.merge, args.ties)
    print(f"wrote {n} {args.format} rows to {args.out}"
          + (f" (merged by {args.merge}; rule in {meta_path(args.out)})" if args.merge != "none" else ""))


def _import(args: argparse.Namespace) -> None:
    with open_store(db_location(args.db)) as store:
        result = import_file(store, args.file, args.skip_invalid)
    print(f"imported {result.imported} {'unpaired' if result.kind == 'unpaired' else 'preference'} rows "
          f"from {args.file}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} invalid rows:")
        for error in result.skipped:
            print(f"  {error}")


def _prompts(args: argparse.Namespace) -> None:
    with open_store(db_location(args.db)) as store:
        pset = import_prompts(store, args.file, args.name, args.overlap, args.from_preferences)
        n = len(store.prompt_sets.prompts(pset.id))
    print(f"imported prompt set {pset.name!r}: {n} prompts from {args.file}, {pset.overlap} vote(s) per prompt")


GENERATION_FLAGS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")


def _pregenerate(args: argparse.Namespace) -> None:
    prepare_environment(args)  # before transformers is imported
    from dataclasses import replace

    from tqdm import tqdm

    from playground.core.home import data_dir
    from playground.inference.settings import GenerationSettings
    from service.pregenerate import choose_models, pregenerate
    from service.state import build_state

    home = data_dir()
    state = build_state(models_config(args, home), home, db_path=db_location(args.db, home), beta=args.beta)
    try:
        pset = state.store.prompt_sets.get(args.set)
        given = {k: getattr(args, k) for k in GENERATION_FLAGS if getattr(args, k) is not None}
        if args.models or given or not pset.models:
            if not args.models and not pset.models:
                raise PlaygroundError(f"prompt set {pset.name!r} has no models yet: name them with --models")
            models = [m.strip() for m in args.models.split(",")] if args.models else pset.models
            pset = choose_models(state, pset, models, replace(GenerationSettings(**pset.generation), **given))
        with tqdm(desc=f"pre-generating {pset.name}", unit="prompt", file=sys.stderr, dynamic_ncols=True) as bar:
            def show(done: int, total: int) -> None:
                if bar.total is None:  # the first call: prompts done by earlier runs are not this run's speed
                    bar.reset(total)
                    bar.initial = bar.n = done
                    bar.refresh()
                else:
                    bar.update(done - bar.n)

            result = pregenerate(state, pset, on_progress=show)
    finally:
        state.store.close()
    print(f"prompt set {pset.name!r}: {result.generated} responses generated from {', '.join(pset.models)}; "
          f"{result.prompts} prompts, {result.already} were already done")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="playground data",
        description="Export the votes as preference data, import preference pairs to train on, or import a "
                    "prompt set for the voting queue and pre-generate its responses.",
    )
    db_help = (f"the vote database: a SQLite file or postgresql://USER@HOST:PORT/DB (default: ${DB_URL_ENV}, else "
               f"$PLAYGROUND_HOME/{DB_NAME}, $PLAYGROUND_HOME defaulting to ~/.cache/preference-playground)")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND",
        help="export, import, prompts or pregenerate; COMMAND --help lists its flags"
    )

    export = commands.add_parser(
        "export", help="write the votes to a .jsonl or .parquet file",
        description="Write the votes to a .jsonl or .parquet file (atomically: a temporary file, then renamed).",
    )
    export.add_argument(
        "--format", choices=EXPORT_FORMATS, required=True,
        help="trl: conversational prompt/chosen/rejected rows for TRL's DPOTrainer, with vote_id, "
             "chosen_model, rejected_model and voter (ties and both-bad votes give no rows); "
             "arena: Chatbot Arena battle rows (model_a, model_b, winner, tstamp, vote_id, voter, anonymous); "
             "unpaired: TRL's unpaired prompt/completion/label rows that KTOTrainer reads (each pair's chosen "
             "answer true and rejected false, both sides of a both-bad vote false, single votes 👍 true / 👎 false)",
    )
    export.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="the file to write: .jsonl for JSON lines, .parquet for Parquet; replaced if it exists")
    export.add_argument(
        "--binarize", choices=("all-pairs", "best-vs-random"), default="all-pairs",
        help="trl only, for votes that rank 3-4 responses: all-pairs gives every (better, worse) pair; "
             "best-vs-random gives the best against one other drawn at random, as UltraFeedback binarized "
             "(default: all-pairs)",
    )
    export.add_argument("--seed", type=int, default=0,
                        help="seed for best-vs-random's draw; the same seed gives the same pairs (default: 0)")
    export.add_argument("--include-imported", action="store_true",
                        help="trl and unpaired: add the imported rows after the votes' rows, as training sees them")
    export.add_argument(
        "--merge", choices=MERGES, default="none",
        help="none: every vote as it is (default); majority: the voting queue's votes on one prompt merged into "
             "one (pairs by majority, rankings by ranked pairs), the rule written to FILE.meta.json",
    )
    export.add_argument("--ties", choices=TIE_POLICIES, default="drop",
                        help="with --merge majority, a prompt whose votes have no majority: drop it, or keep it "
                             "as a tie (trl rows leave ties out; arena rows keep them) (default: drop)")
    export.add_argument("--db", metavar="PATH|URL", help=db_help)
    export.set_defaults(run=_export)

    imp = commands.add_parser(
        "import", help="add TRL preference pairs or unpaired rows from a file, all or nothing",
        description="Add the preference pairs (or unpaired prompt/completion/label rows, for KTO) in FILE to the "
                    "database for training. Every row is checked first; if any is invalid, nothing is imported "
                    "and the bad lines are listed.",
    )
    imp.add_argument(
        "file", type=Path, metavar="FILE",
        help=f"TRL preference data ({', '.join(IMPORT_FORMATS)}; .json means JSON lines): standard "
             "(prompt/chosen/rejected strings), conversational (message lists) or implicit prompt "
             "(whole chosen/rejected conversations and no prompt); or TRL's unpaired format "
             "(prompt/completion/label, label true for a desirable answer), told apart by the first row's keys",
    )
    imp.add_argument("--skip-invalid", action="store_true",
                     help="import the valid rows and list the invalid ones, instead of importing nothing")
    imp.add_argument("--db", metavar="PATH|URL", help=db_help + "; created if missing")
    imp.set_defaults(run=_import)

    prompts = commands.add_parser(
        "prompts", help="import a prompt set for the voting queue, all or nothing",
        description="Import the prompts in FILE as a new prompt set. Rows: 'prompt' (a string, or a list of "
                    "{role, content} messages ending with the user's turn), optional 'id' (unique; default: the "
                    "line number) and 'category'. Every row is checked first; if any is invalid, nothing is "
                    "imported and the bad lines are listed.",
    )
    prompts.add_argument("file", type=Path, metavar="FILE", help=f"the prompts ({', '.join(IMPORT_FORMATS)})")
    prompts.add_argument("--name", required=True, help="the new set's name (unique)")
    prompts.add_argument("--overlap", type=int, default=1,
                         help="votes a prompt needs before it leaves the queue (default: 1)")
    prompts.add_argument("--from-preferences", action="store_true",
                         help="FILE is TRL preference data: take its distinct prompts")
    prompts.add_argument("--db", metavar="PATH|URL", help=db_help + "; created if missing")
    prompts.set_defaults(run=_prompts)

    pre = commands.add_parser(
        "pregenerate", help="generate and score a prompt set's responses before voting (resumable)",
        description="Answer every prompt of a set with each of the set's models, scored, so voters never wait. "
                    "Each prompt is stored when done: run the same command again to continue after a stop.",
    )
    pre.add_argument("--set", required=True, metavar="NAME", help="the prompt set")
    pre.add_argument("--models", metavar="M1,M2",
                     help="2-4 comma-separated models: sft, reference, policy or a checkpoint id (default: the "
                          "set's models; they cannot change once the set has votes)")
    pre.add_argument("--temperature", type=float, help="0 = greedy (default: the set's, else 0.7)")
    pre.add_argument("--top-p", type=float, help="default: the set's, else 0.9")
    pre.add_argument("--top-k", type=int, help="0 = off (default: the set's, else 50)")
    pre.add_argument("--max-new-tokens", type=int, help="default: the set's, else 128")
    pre.add_argument("--repetition-penalty", type=float, help="default: the set's, else 1.0")
    pre.add_argument("--seed", type=int, help="base seed; each prompt's seed derives from it (default: the set's, "
                                              "else 0)")
    add_beta_arg(pre, "β of the implicit rewards stored with each response")
    pre.add_argument("--db", metavar="PATH|URL", help=db_help)
    add_model_args(pre)
    pre.set_defaults(run=_pregenerate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0

