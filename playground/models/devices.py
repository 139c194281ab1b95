"""Device and dtype choice: cuda, then mps, then cpu; bf16 on cuda, fp32 elsewhere."""

import torch

from playground.core.errors import PlaygroundError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps`, checked against what this machine has."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise PlaygroundError(f"unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PlaygroundError(f"device {name!r} asked for, but this machine has no usable CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PlaygroundError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise PlaygroundError(f"device {name!r} asked for, but MPS is not available here")
    elif device.type != "cpu":
        raise PlaygroundError(f"unsupported device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on cuda and fp32 elsewhere (fp32 keeps CPU log-probs exact to ~1e-5)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise PlaygroundError(f"unknown dtype {name!r}: expected auto, {', '.join(DTYPES)}")
    return DTYPES[name]
