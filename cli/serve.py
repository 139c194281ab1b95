"""`playground serve`: the Gradio app: compare SFT, reference and DPO policy side by side, vote, train, evaluate.

`playground serve --help` lists every flag; `make run` sets up and starts it with the defaults
(`python app.py` is the same command).
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cli.common import HelpFormatter, add_beta_arg, add_model_args, models_config, prepare_environment

if TYPE_CHECKING:  # --help answers without importing the engine
    from playground.core.access import Access
    from playground.inference.scheduler import SchedulerConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="playground serve",
        description="Serve the Preference Playground (Gradio) on http://HOST:PORT. Everything runs in "
        "this process: generation, scoring, votes and DPO updates.",
        formatter_class=HelpFormatter,
    )
    add_model_args(parser)
    s = parser.add_argument_group("serving")
    s.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the app to your network")
    s.add_argument("--port", type=int, default=7860, help="port to listen on")
    s.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    s.add_argument("--db", default=None, metavar="PATH|URL",
                   help="vote database: a SQLite file, or postgresql://USER@HOST:PORT/DB on a PostgreSQL server that "
                   "several app processes can share (see README, Running for a team); keep its password in "
                   "$PGPASSWORD or ~/.pgpass, not in the URL (default: $PLAYGROUND_DB_URL, else "
                   "$PLAYGROUND_HOME/votes.sqlite)")
    a = parser.add_argument_group("access (see README, Security)")
    a.add_argument("--auth-file", type=Path, default=None, metavar="FILE",
                   help="turn on logins: voter accounts, one user:password per line (# starts a comment); voters "
                   "generate and vote under their login name (default: $PLAYGROUND_AUTH_FILE)")
    a.add_argument("--admin-password-file", type=Path, default=None, metavar="FILE",
                   help="add the 'admin' account with the password on the file's first line (or set "
                   "$PLAYGROUND_ADMIN_PASSWORD): the only account that may train, import, export, delete and switch "
                   "the serving checkpoint once logins are on (without any login everyone may)")
    a.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="a voter account on the command line (repeatable); unsafe on a shared machine: every local "
                   "user sees it in `ps` (prefer --auth-file)")
    a.add_argument("--admin-password", default=None, metavar="PASSWORD",
                   help="the admin password on the command line; unsafe on a shared machine: every local user sees "
                   "it in `ps` (prefer --admin-password-file or $PLAYGROUND_ADMIN_PASSWORD)")
    a.add_argument("--votes-visible-to-all", action="store_true",
                   help="with logins on, let every voter read every vote (the Data tab, /votes); by default a "
                   "voter sees only their own votes and the admin sees all")
    a.add_argument("--max-votes-per-day", type=int, default=None, metavar="N",
                   help="the most pairwise votes one voter may cast in a UTC day (Playground and Vote tab, API "
                   "alike); the next is refused with a message and not stored. Default: no cap")
    g = parser.add_argument_group("generation (one continuous batch for every session; see README, Many voters)")
    g.add_argument("--max-batch", type=int, default=64, metavar="ROWS",
                   help="sequences decoded together, over all sessions; more wait at token boundaries")
    g.add_argument("--max-waiting", type=int, default=256, metavar="ROWS",
                   help="sequences that may wait to join the batch; beyond it a request is answered 'busy, try "
                   "again in a moment' at once")
    g.add_argument("--per-session", type=int, default=8, metavar="ROWS",
                   help="sequences one browser or API session may have generating or waiting")
    g.add_argument("--serial", action="store_true",
                   help="generate one request at a time (the old behaviour; the baseline of `playground bench load`)")
    p = parser.add_argument_group("scores")
    add_beta_arg(p, "β in the implicit reward β·log(π/π_ref) (> 0)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: expected 1..65535")
    if args.max_votes_per_day is not None and args.max_votes_per_day < 1:
        parser.error(f"--max-votes-per-day {args.max_votes_per_day}: expected a number of votes ≥ 1")
    return args


def scheduler_config(args: argparse.Namespace) -> "SchedulerConfig":
    from playground.inference.scheduler import SchedulerConfig

    return SchedulerConfig(max_batch=args.max_batch, max_waiting=args.max_waiting, per_session=args.per_session,
                           serial=args.serial)


def load_app_access(args: argparse.Namespace) -> "Access":
    """Accounts from the flags and the environment; a warning for each password on the command line."""
    from playground.core.access import admin_password_from, auth_file_from, command_line_secrets, load_access

    admin, source = admin_password_from(args.admin_password, args.admin_password_file)
    auth_file = auth_file_from(args.auth_file)
    if args.db and urlsplit(args.db).password:  # --db postgresql://user:PASSWORD@…
        print("warning: --db puts a password on the command line, where every local user can read it (ps); "
              "use $PGPASSWORD, ~/.pgpass or $PLAYGROUND_DB_URL instead", file=sys.stderr)
    for flag in command_line_secrets(args.auth, source):
        print(f"warning: {flag} puts a password on the command line, where every local user can read it "
              f"(ps); use {'--auth-file' if flag == '--auth' else '--admin-password-file'} instead", file=sys.stderr)
    return load_access(args.auth, auth_file, admin, source)


def exposure_warning(host: str, share: bool, logins: bool) -> str:
    """What serving beyond this machine lets others do ("" when it does not): without logins everyone
    is the admin (`playground.core.access`)."""
    if host in ("127.0.0.1", "localhost", "::1") and not share:
        return ""
    where = f"serving beyond this machine (--host {host}{' --share' if share else ''})"
    if logins:
        return (f"warning: {where}; users with a login can generate and vote under their login name; only the "
                "'admin' account can train, import, export and switch the serving checkpoint")
    return (f"warning: {where} without logins: anyone who can reach it is the admin. They can generate and vote "
            "under any name, train and switch the serving checkpoint, import data, export every vote, delete every "
            "vote (Undo, under each voter's name in turn) and make the server load a model from any path it can "
            "read (the Dashboard's LLM judge). Turn logins on with --auth-file and --admin-password-file (README, "
            "Security)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A server shares its cores with its event loop and any neighbour: OpenMP threads that spin
    # while waiting for each other then make every small decode step many times slower (measured:
    # a 32-token round 36 s instead of 4 s while a client process polled the page). Read by the
    # OpenMP runtime when torch loads, so set before any import of it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    prepare_environment(args)
    scheduler = scheduler_config(args).validate()  # before the models load: a bad flag fails at once
    access = load_app_access(args)
    warning = exposure_warning(args.host, args.share, access.enabled)
    if warning:
        print(warning, file=sys.stderr)
    from playground.core.home import data_dir
    from playground.data.store import db_location
    from service.state import build_state
    from ui.app import build_demo, launch_kwargs

    home = data_dir()
    started = time.perf_counter()
    state = build_state(models_config(args, home), home, db_path=db_location(args.db, home), beta=args.beta,
                        access=access, votes_visible_to_all=args.votes_visible_to_all,
                        scheduler=scheduler, max_votes_per_day=args.max_votes_per_day)
    print(f"models ready in {time.perf_counter() - started:.1f} s on {state.models.device} "
          f"({str(state.models.dtype).removeprefix('torch.')}); data in {home}", file=sys.stderr)
    demo = build_demo(state)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(state))
    return 0
