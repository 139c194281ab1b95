"""Shared by the benchmarks: a result table printed for people and written as JSON for tools.

Every result records the machine it ran on (`machine`): CPU model and the flags that decide
whether bfloat16 is native (AVX512-BF16 / AMX-BF16) or emulated (AVX2 only, many times slower
than float32), the torch version and threads, and the load average before and after the run, since
these machines are shared and a busy neighbour slows one side of a comparison.
"""

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", *BF16_FLAGS)
# 1-minute load above this many runnable tasks beyond our own threads means someone else was busy.
NOISE_MARGIN = 0.5


def load_default_models():  # -> playground.models.roles.Models
    """The packaged SmolLM2 in its default roles, with library chatter off."""
    from playground.models.sources import quiet_libraries

    quiet_libraries()
    from playground.core.home import data_dir
    from playground.models.roles import ModelsConfig, load_models

    return load_models(ModelsConfig(models_dir=data_dir() / "models"))


def cpu() -> dict[str, Any]:
    """CPU model and the SIMD flags relevant to float32 and bfloat16 speed, from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    first = info.split("\n\n", 1)[0]  # one block per logical CPU; the first describes them all
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    flags = set(fields.get("flags", "").split())
    present = [f for f in REPORTED_FLAGS if f in flags]
    return {"cpu_model": fields.get("model name", platform.processor() or "unknown"), "cpu_flags": present,
            "bf16_native": any(f in flags for f in BF16_FLAGS)}


def bf16_native() -> bool:
    return cpu()["bf16_native"]


def cpu_flags_line() -> str:
    c = cpu()
    native = "native bf16" if c["bf16_native"] else "no native bf16 (bf16 emulated)"
    return f"{c['cpu_model']}; flags: {' '.join(c['cpu_flags']) or 'none of ' + ' '.join(REPORTED_FLAGS)}; {native}"


def machine(load_before: Sequence[float] | None = None) -> dict[str, Any]:
    """The machine and, when `load_before` (os.getloadavg() at the start) is given, how busy it was."""
    import torch

    out: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        **cpu(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if load_before is not None:
        after = os.getloadavg()
        out["loadavg_before"] = [round(x, 2) for x in load_before]
        out["loadavg_after"] = [round(x, 2) for x in after]
        # Before the run nothing of ours is running; after it our own threads count once.
        out["shared_noisy"] = (load_before[0] > NOISE_MARGIN
                               or after[0] > torch.get_num_threads() + NOISE_MARGIN)
    return out


def seconds_of(fn: Callable[[], Any]) -> float:
    """Seconds of one call of `fn`."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(methods: dict[str, Callable[..., Any]], repeats: int,
              prepare: dict[str, Callable[[], Any]] | None = None) -> dict[str, list[float]]:
    """Each method once as warm-up, then `repeats` rounds running every method in turn, the order
    reversed every other round (A B, B A, A B …), so a neighbour's burst of load falls on both sides
    and neither always runs right after the other; seconds of every timed call per method.

    A method named in `prepare` is called with what its untimed `prepare` callable returned
    (a fresh model copy, say), so that preparation stays outside the timed region."""
    prepare = prepare or {}

    def once(name: str) -> float:
        if name in prepare:
            arg = prepare[name]()
            return seconds_of(lambda: methods[name](arg))
        return seconds_of(methods[name])

    for name in methods:
        once(name)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(repeats):
        for name in list(methods)[:: -1 if round_ % 2 else 1]:
            times[name].append(once(name))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def report(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None,
           load_before: Sequence[float] | None = None) -> Path:
    """Print `rows` as an aligned table and write `results/<name>.json` with the machine description."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    for key, value in (extra or {}).items():
        print(f"{key}: {_fmt(value)}")
    described = machine(load_before)
    print(f"cpu: {cpu_flags_line()}; torch {described['torch']}, {described['torch_threads']} threads")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": described, "rows": rows, **(extra or {})}, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, list) and value and isinstance(value[0], float):
        return "[" + ", ".join(f"{v:.3g}" for v in value) + "]"
    return str(value)
