"""Writing so that a reader (or a restart after kill -9) sees nothing or everything, never half.

A file is written to a temporary name beside it, synced, then renamed over it; a folder is built
under a dot-name beside its final name and renamed into place. The dot-names are never listed as
results (`checkpoints.complete_checkpoints`), and a failure removes them.
"""

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from playground.core.errors import PlaygroundError


def write_file(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write` on a temporary file next to `path`, sync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise PlaygroundError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """`data` as indented UTF-8 JSON (NaN refused: it is not JSON), written atomically."""
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_file(path, lambda f: f.write(text.encode("utf-8")))


@contextmanager
def new_folder(final: Path, what: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; when the block ends without an error it
    becomes `final` (which must not exist yet). `what` names the thing in error messages."""
    if final.exists():
        raise PlaygroundError(f"{final}: already exists; {what} is written into a new folder")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as exc:
        raise PlaygroundError(f"cannot create {what} in {final.parent}: {exc.strerror or exc}") from None
    try:
        yield tmp
        tmp.chmod(0o755)
        os.rename(tmp, final)
    except OSError as exc:
        raise PlaygroundError(f"cannot write {what} into {final}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
