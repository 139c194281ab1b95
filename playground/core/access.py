"""Who may do what: logins, the admin role, and the name a vote is stored under.

Without `--auth` the app is a single-user tool on 127.0.0.1: nobody logs in and everyone may do
everything. With `--auth`, Gradio's login asks for a user and password; every account may generate
and vote (under its login name, so nobody votes as someone else), and only the `admin` account
(`--admin-password-file` or `PLAYGROUND_ADMIN_PASSWORD`) may train, delete, import, export or switch
the serving checkpoint.

Passwords given on the command line (`--auth user:password`, `--admin-password`) are visible to every
local user in `ps`: a file (`--auth-file`, `--admin-password-file`) or the environment is the safe way,
and the command-line forms print a warning. No error names a password: a bad entry is named by its
position (`--auth entry 2`, `FILE:LINE`), never by its text.
"""

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from playground.core.chat import voter_name
from playground.core.errors import PlaygroundError

ADMIN = "admin"
MIN_PASSWORD_LEN = 8
ADMIN_PASSWORD_ENV = "PLAYGROUND_ADMIN_PASSWORD"
AUTH_FILE_ENV = "PLAYGROUND_AUTH_FILE"


@dataclass(frozen=True)
class Access:
    """Accounts by login name (passwords kept only in memory, compared in constant time)."""

    passwords: dict[str, str] = field(default_factory=dict, repr=False)  # never in a log or traceback
    admins: frozenset[str] = frozenset()

    @property
    def enabled(self) -> bool:
        return bool(self.passwords)

    def login(self, user: str, password: str) -> bool:
        """Gradio's `auth` callable: True when `user` exists and `password` is theirs."""
        expected = self.passwords.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), str(password).encode())

    def is_admin(self, user: str | None) -> bool:
        return not self.enabled or user in self.admins

    def require_admin(self, user: str | None, action: str) -> None:
        """Raise unless `user` may do admin work; `action` names it ("training", "importing")."""
        if not self.is_admin(user):
            raise PlaygroundError(f"{action} needs the admin role; log in as {ADMIN!r} to do it")

    def voter(self, user: str | None, typed: str) -> str:
        """The name a vote is stored under: the login when logins are on, else the typed name."""
        if self.enabled:
            if not user:
                raise PlaygroundError("log in to vote")
            return voter_name(user)
        return voter_name(typed)


def parse_account(text: str, where: str) -> tuple[str, str]:
    """`user:password` → (user, password); the password may itself contain ':'. Errors name the
    entry by `where` only: the text may hold a password."""
    user, sep, password = text.strip().partition(":")
    if not sep or not user.strip() or not password:
        raise PlaygroundError(f"{where}: expected USER:PASSWORD (a user name, a colon, a password)")
    try:
        user = voter_name(user)
    except PlaygroundError as exc:
        raise PlaygroundError(f"{where}: {exc}") from None
    if len(password) < MIN_PASSWORD_LEN:
        raise PlaygroundError(f"{where}: the password of {user!r} is shorter than {MIN_PASSWORD_LEN} characters")
    return user, password


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    """Why a secrets file could not be read, without quoting any of its bytes."""
    return "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or type(exc).__name__


def read_secret_file(path: Path, flag: str) -> str:
    """The first line of a password file (a trailing newline is not part of the password)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaygroundError(f"{flag} {path}: cannot read it ({_reason(exc)})") from None
    if not lines or not lines[0]:
        raise PlaygroundError(f"{flag} {path}: the first line is empty; put the password there")
    return lines[0]


def admin_password_from(flag: str | None, file: Path | None, environ: dict[str, str] | None = None
                        ) -> tuple[str | None, str]:
    """The admin password and where it came from: `--admin-password-file`, else `--admin-password`
    (the unsafe one; a flag wins over the environment), else the environment's PLAYGROUND_ADMIN_PASSWORD;
    (None, "") when none is set."""
    env = os.environ if environ is None else environ
    given = [name for name, value in (("--admin-password", flag), ("--admin-password-file", file)) if value is not None]
    if len(given) > 1:
        raise PlaygroundError("give the admin password once: --admin-password-file or --admin-password, not both")
    if file is not None:
        return read_secret_file(file, "--admin-password-file"), "--admin-password-file"
    if flag is not None:
        return flag, "--admin-password"
    if env.get(ADMIN_PASSWORD_ENV):
        return env[ADMIN_PASSWORD_ENV], ADMIN_PASSWORD_ENV
    return None, ""


def auth_file_from(flag: Path | None, environ: dict[str, str] | None = None) -> Path | None:
    """The voter accounts file: `--auth-file`, else the environment's PLAYGROUND_AUTH_FILE."""
    env = os.environ if environ is None else environ
    return flag if flag is not None else Path(env[AUTH_FILE_ENV]) if env.get(AUTH_FILE_ENV) else None


def command_line_secrets(accounts: list[str], admin_source: str) -> list[str]:
    """The flags that put a password on the command line, where `ps` shows it to every local user."""
    return (["--auth"] if accounts else []) + (["--admin-password"] if admin_source == "--admin-password" else [])


def load_access(accounts: list[str], auth_file: Path | None, admin_password: str | None,
                admin_source: str = "--admin-password") -> Access:
    """Accounts from `--auth user:password` flags and an `--auth-file` (one `user:password` a line,
    `#` comments), plus the `admin` account when `admin_password` is given (`admin_source` names
    where it came from, for errors)."""
    entries = [(text, f"--auth entry {n}") for n, text in enumerate(accounts, 1)]
    if auth_file is not None:
        try:
            lines = auth_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PlaygroundError(f"--auth-file {auth_file}: cannot read it ({_reason(exc)})") from None
        entries += [(line, f"{auth_file}:{n}") for n, line in enumerate(lines, 1)
                    if line.strip() and not line.lstrip().startswith("#")]
    if admin_password is not None:
        entries.append((f"{ADMIN}:{admin_password}", admin_source))
    passwords: dict[str, str] = {}
    for text, where in entries:
        user, password = parse_account(text, where)
        if user in passwords:
            raise PlaygroundError(f"{where}: account {user!r} is defined twice")
        passwords[user] = password
    return Access(passwords, frozenset({ADMIN} if admin_password is not None else ()))
