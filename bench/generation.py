"""Generation on the real SmolLM2 model: k responses in one batch versus one after another, and one
request alone through the scheduler versus plain `model.generate`.

`playground bench generation`:

- k = 2 and 4: the slots alternate policy and reference, so the batched call is a peft mixed-adapter
  batch; greedy with a fixed number of new tokens (EOS ignored) keeps both paths doing identical work.
- one request alone (one row, `--single-tokens` new tokens, greedy and T = 0.7 with the default
  top-p and top-k, seed 0, EOS ignored), streamed as the app reads it, against plain
  `model.generate` on the same module, prompt and seed; each OpenMP wait setting of `WAITS` in a
  child process of its own (OpenMP reads it once, when torch loads), the two paths alternated in
  it. `scheduler_over_plain` compares within a setting; `over_plain_default` compares with plain
  `generate` as a script runs it (no setting), which is how a user would time it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.common import load_default_models, report

# The OpenMP (libgomp) wait settings compared for one request alone: `playground serve`'s (threads
# sleep at once when idle), a short spin (10k rounds, some microseconds, then sleep), and none at all
# (libgomp spins 300k rounds before sleeping).
WAITS = {"passive (serve)": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin 10k": {"GOMP_SPINCOUNT": "10000"}, "default": {}}
SAMPLINGS = {"greedy": {"temperature": 0.0}, "T=0.7": {"temperature": 0.7}}  # top-p 0.9, top-k 50 (defaults)
MESSAGES = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]


def batched_rows(new_tokens: int, repeats: int) -> tuple[list[dict], dict]:
    """k responses in one scheduler batch against the same responses one at a time."""
    models = load_default_models()
    from playground.inference.generation import generate
    from playground.inference.scheduler import Scheduler
    from playground.inference.settings import GenerationSettings

    scheduler = Scheduler(models)
    scheduler.end_ids = set()  # EOS never ends a row early, so every path generates exactly new_tokens per response
    settings = GenerationSettings(temperature=0, max_new_tokens=new_tokens)

    def best_time(slots: list) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            generate(scheduler, slots, MESSAGES, settings)
            times.append(time.perf_counter() - start)
        return min(times)

    best_time([models.policy])  # warm-up
    rows, ratios = [], {}
    for k in (2, 4):
        slots = [models.policy if i % 2 == 0 else models.reference for i in range(k)]
        batched = best_time(slots)
        sequential = sum(best_time([s]) for s in slots)
        tokens = k * new_tokens
        rows.append({"k": k, "mode": "batched (one generate)", "seconds": batched, "tokens_per_s": tokens / batched})
        rows.append({"k": k, "mode": "sequential", "seconds": sequential, "tokens_per_s": tokens / sequential})
        ratios[f"k{k}_batched_over_sequential"] = sequential / batched
    return rows, {**ratios, "device": str(models.device)}


def single_child(new_tokens: int, repeats: int) -> None:
    """In a child process: tokens/s of one request alone, plain `generate` and the scheduler
    alternated (median of `repeats`), for each sampling; one JSON object on stdout."""
    models = load_default_models()
    import torch

    from playground.inference.generation import stream_generate
    from playground.inference.scheduler import Scheduler
    from playground.inference.settings import GenerationSettings, prompt_ids

    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    ids = prompt_ids(models, MESSAGES)
    model, pad = models.policy.model, models.tokenizer.pad_token_id

    def plain(settings: GenerationSettings) -> int:
        torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=pad,
                                 eos_token_id=None, min_new_tokens=new_tokens, **settings.generate_kwargs())
        return out.shape[1] - ids.shape[1]

    def scheduled(settings: GenerationSettings) -> int:
        *_, final = stream_generate(scheduler, [models.policy], MESSAGES, settings)  # every step read
        return len(final.token_ids[0])

    found = {}
    for name, sampling in SAMPLINGS.items():
        settings = GenerationSettings(**sampling, max_new_tokens=new_tokens, seed=0)
        paths = {"plain generate": plain, "scheduler": scheduled}
        rates: dict[str, list[float]] = {path: [] for path in paths}
        for run in range(repeats + 1):  # the first run of each path warms it up
            for path in list(paths)[:: -1 if run % 2 else 1]:
                start = time.perf_counter()
                tokens = paths[path](settings)
                if run:
                    rates[path].append(tokens / (time.perf_counter() - start))
        found[name] = {path: statistics.median(r) for path, r in rates.items()}
    print(json.dumps({"threads": torch.get_num_threads(), "rates": found}))


def single_rows(new_tokens: int, repeats: int) -> tuple[list[dict], dict]:
    """One request alone under each wait setting, each in a child process (`single_child`)."""
    rates, threads = {}, None
    for wait, env in WAITS.items():
        clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        child = subprocess.run([sys.executable, "-m", "bench.generation", "--single-child", "--single-tokens",
                                str(new_tokens), "--repeats", str(repeats)], env={**clean, **env},
                               capture_output=True, text=True, check=True)
        out = json.loads(child.stdout.strip().splitlines()[-1])
        rates[wait], threads = out["rates"], out["threads"]
    rows, ratios = [], {}
    for wait, by_sampling in rates.items():
        for sampling, paths in by_sampling.items():
            over_default = paths["scheduler"] / rates["default"][sampling]["plain generate"]
            rows.append({"k": 1, "mode": f"one request, {sampling}, wait {wait}",
                         "plain_tokens_per_s": paths["plain generate"], "scheduler_tokens_per_s": paths["scheduler"],
                         "scheduler_over_plain": paths["scheduler"] / paths["plain generate"],
                         "over_plain_default": over_default})
            key = f"single_{sampling.replace('=', '').replace('.', '')}_{wait.split()[0]}"
            ratios[f"{key}_scheduler_over_plain"] = paths["scheduler"] / paths["plain generate"]
            ratios[f"{key}_scheduler_over_plain_default"] = over_default
    return rows, {**ratios, "single_new_tokens": new_tokens, "single_threads": threads}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench generation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens generated per response (k = 2, 4)")
    parser.add_argument("--single-tokens", type=int, default=128, help="tokens of the one request alone")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration")
    parser.add_argument("--only-single", action="store_true", help="only the one-request comparison")
    parser.add_argument("--single-child", action="store_true", help=argparse.SUPPRESS)  # single_child's process
    args = parser.parse_args(argv)
    if args.single_child:
        single_child(args.single_tokens, args.repeats)
        return
    load_before = os.getloadavg()
    rows, extra = ([], {}) if args.only_single else batched_rows(args.new_tokens, args.repeats)
    single, single_extra = single_rows(args.single_tokens, args.repeats)
    report("generation", rows + single, {"new_tokens": args.new_tokens, **extra, **single_extra},
           load_before=load_before)


if __name__ == "__main__":
    main()
