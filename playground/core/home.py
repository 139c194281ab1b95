"""The data directory: converted models, the vote database, checkpoints."""

import os
from pathlib import Path

from playground.core.errors import PlaygroundError

DEFAULT_HOME = Path("~/.cache/preference-playground")


def data_dir(create: bool = True) -> Path:
    """`$PLAYGROUND_HOME`, else `~/.cache/preference-playground`; created and checked writable."""
    home = Path(os.environ.get("PLAYGROUND_HOME") or DEFAULT_HOME).expanduser()
    if not create:
        return home
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaygroundError(f"cannot create the data directory {home}: {exc.strerror}") from None
    if not os.access(home, os.W_OK):
        raise PlaygroundError(
            f"the data directory {home} is not writable; set PLAYGROUND_HOME to a writable folder"
        )
    return home
