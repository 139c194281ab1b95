"""Shared by the benchmarks: a result table printed for people and written as JSON for tools."""

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def load_default_models():  # -> playground.models.Models
    """The packaged SmolLM2 in its default roles, with library chatter off."""
    from playground.cli import quiet_libraries

    quiet_libraries()
    from playground.core.home import data_dir
    from playground.models.roles import ModelsConfig, load_models

    return load_models(ModelsConfig(models_dir=data_dir() / "models"))


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def report(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Print `rows` as an aligned table and write `results/<name>.json` with the machine description."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    for key, value in (extra or {}).items():
        print(f"{key}: {_fmt(value)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": machine(), "rows": rows, **(extra or {})}, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
