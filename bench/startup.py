"""Cold (with GGUF conversion) versus warm start of the default model roles.

`playground bench startup` — each start runs in a fresh subprocess so imports, caches and
peak memory are those a user sees; the cold one uses an empty data directory.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import report

CHILD = """
import json, resource, time
t0 = time.perf_counter()
from playground.core.home import data_dir
from playground.models.roles import ModelsConfig, load_models
t1 = time.perf_counter()
models = load_models(ModelsConfig(models_dir=data_dir() / "models"))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def start_once(home: Path) -> dict:
    env = {"PLAYGROUND_HOME": str(home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm-runs", type=int, default=3, help="warm starts to average")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cold = start_once(Path(tmp))
        warm = [start_once(Path(tmp)) for _ in range(args.warm_runs)]
    warm_load = sum(w["load_s"] for w in warm) / len(warm)
    rows = [
        {"start": "cold (convert GGUF)", **cold},
        {"start": f"warm (mean of {len(warm)})", "import_s": sum(w["import_s"] for w in warm) / len(warm),
         "load_s": warm_load, "peak_rss_mib": max(w["peak_rss_mib"] for w in warm)},
    ]
    report("startup", rows, {"cold_over_warm_load": cold["load_s"] / warm_load})

