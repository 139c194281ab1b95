"""Who may do what: logins, the admin role, and the name a vote is stored under.

Without `--auth` the app is a single-user tool on 127.0.0.1: nobody logs in and everyone may do
everything. With `--auth`, Gradio's login asks for a user and password; every account may generate
and vote (under its login name, so nobody votes as someone else), and only the `admin` account
(`--admin-password`) may train, delete, import, export or switch the serving checkpoint.
"""

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from playground.core.errors import PlaygroundError
from playground.data.votes import voter_name

ADMIN = "admin"
MIN_PASSWORD_LEN = 8


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
    """`user:password` → (user, password); the password may itself contain ':'."""
    user, sep, password = text.strip().partition(":")
    if not sep or not user.strip() or not password:
        raise PlaygroundError(f"{where}: expected user:password, got {text.strip()!r}")
    user = voter_name(user)
    if len(password) < MIN_PASSWORD_LEN:
        raise PlaygroundError(f"{where}: the password of {user!r} is shorter than {MIN_PASSWORD_LEN} characters")
    return user, password


def load_access(accounts: list[str], auth_file: Path | None, admin_password: str | None) -> Access:
    """Accounts from `--auth user:password` flags and an `--auth-file` (one `user:password` a line,
    `#` comments), plus the `admin` account when `admin_password` is given."""
    entries = [(text, f"--auth {text.partition(':')[0]}:…") for text in accounts]
    if auth_file is not None:
        try:
            lines = auth_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PlaygroundError(f"--auth-file {auth_file}: cannot read it ({exc})") from None
        entries += [(line, f"{auth_file}:{n}") for n, line in enumerate(lines, 1)
                    if line.strip() and not line.lstrip().startswith("#")]
    if admin_password is not None:
        entries.append((f"{ADMIN}:{admin_password}", "--admin-password"))
    passwords: dict[str, str] = {}
    for text, where in entries:
        user, password = parse_account(text, where)
        if user in passwords:
            raise PlaygroundError(f"{where}: account {user!r} is defined twice")
        passwords[user] = password
    return Access(passwords, frozenset({ADMIN} if admin_password is not None else ()))
