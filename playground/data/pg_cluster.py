"""A throwaway PostgreSQL cluster on this machine (`initdb` + `pg_ctl`): what the tests and the
store benchmark run against. It starts on a free local port in a temporary folder, trusts local
connections (user `playground`, no password) and is deleted by `remove()`.

The binaries come from PATH or Debian's /usr/lib/postgresql/<version>/bin (`make setup-dev`
installs Debian's `postgresql` when they are missing and it runs as root). PostgreSQL refuses to
run as root, so as root every command runs as the `postgres` user the Debian package creates.
"""

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from playground.core.errors import PlaygroundError

USER = "playground"
SERVER_USER = "postgres"  # who runs the server when we are root
START_TIMEOUT_S = 60


def find_binaries() -> Path:
    """The folder holding `initdb` and `pg_ctl`: PATH first, then the newest Debian version."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                    if p.parent.parent.name.isdigit() else 0)
    if debian:
        return debian[-1].parent
    raise PlaygroundError("PostgreSQL's initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin; "
                          "run `make setup-dev` as root (it installs Debian's postgresql) or install them")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """`durable=False` turns fsync off (tests: fast, and nothing to keep); the benchmark keeps
    PostgreSQL's defaults, so each commit is flushed to disk as SQLite's synchronous=FULL is."""

    def __init__(self, durable: bool = True) -> None:
        self.bin = find_binaries()
        self.durable = durable
        self.folder = Path(tempfile.mkdtemp(prefix="playground-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self._as_server_user = os.geteuid() == 0
        if self._as_server_user:
            shutil.chown(self.folder, SERVER_USER)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER, "-E", "UTF8",
                  "--no-locale", *([] if durable else ["--no-sync"]))

    def _run(self, *command: str) -> None:
        if self._as_server_user:
            command = ("su", SERVER_USER, "-s", "/bin/bash", "-c", shlex.join(command))
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise PlaygroundError(f"{shlex.join(command)} failed: {(done.stderr or done.stdout).strip()}")

    def start(self) -> None:
        options = [f"-p {self.port}", f"-k {self.folder}", "-c listen_addresses=127.0.0.1"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", " ".join(options),
                  "-l", str(self.folder / "server.log"), "-w", "-t", str(START_TIMEOUT_S), "start")

    def stop(self) -> None:
        """Stop the server at once (fast shutdown: open connections are cut)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, statement: str) -> None:
        """Run one statement outside a transaction (CREATE DATABASE cannot run inside one)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(statement)

    def remove(self) -> None:
        """Stop the server if it runs, and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
