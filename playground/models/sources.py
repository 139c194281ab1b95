"""What a model flag points at: the packaged default, a GGUF file, an HF folder, a LoRA adapter
folder or a hub id. Pure path logic, no torch, so entry points can decide on network use before
transformers is imported."""

import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from playground.core.errors import PlaygroundError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class Kind(Enum):
    DEFAULT = "default"
    GGUF = "gguf"
    HF_FOLDER = "hf-folder"
    ADAPTER = "lora-adapter"
    HUB = "hub"


@dataclass(frozen=True)
class Source:
    kind: Kind
    location: str  # a resolved path, or the hub id

    @property
    def path(self) -> Path:
        return Path(self.location)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or spec.endswith(".gguf") or "\\" in spec


def classify(spec: str | None, role: str) -> Source:
    """Classify a `--sft/--ref/--policy` value; `role` only words the error messages."""
    if spec is None or spec == "":
        return Source(Kind.DEFAULT, "")
    path = Path(spec).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix != ".gguf":
                raise PlaygroundError(
                    f"--{role} {spec}: a file, but not a .gguf model; expected a .gguf file, "
                    "a Hugging Face model folder or a LoRA adapter folder"
                )
            return Source(Kind.GGUF, str(path))
        if (path / "adapter_config.json").is_file():
            return Source(Kind.ADAPTER, str(path))
        if (path / "config.json").is_file():
            return Source(Kind.HF_FOLDER, str(path))
        raise PlaygroundError(
            f"--{role} {spec}: folder has neither config.json (a Hugging Face model) nor "
            "adapter_config.json (a LoRA adapter)"
        )
    if not _looks_like_path(spec) and _HUB_ID.match(spec):
        return Source(Kind.HUB, spec)
    raise PlaygroundError(f"--{role} {spec}: no such file or folder")


def use_hub(specs: list[str | None], role_names: list[str]) -> bool:
    """True when any flag names a hub id; everything else runs with the hub switched off."""
    return any(classify(s, r).kind is Kind.HUB for s, r in zip(specs, role_names, strict=True))


def set_hub_access(enabled: bool) -> None:
    """Must run before transformers/huggingface_hub are imported: they read these once."""
    if not enabled:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def quiet_libraries() -> None:
    """Keep the terminal for our own progress and errors: no per-weight loading bars, no library
    deprecation notices aimed at library authors. Imports transformers: call after `set_hub_access`."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
