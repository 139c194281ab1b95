"""k responses in one batched `generate` versus the same responses one after another.

`playground bench generation` — the real SmolLM2 model; the slots alternate policy and
reference, so the batched call is a peft mixed-adapter batch. Greedy decoding with a fixed
number of new tokens (EOS ignored) keeps both paths doing identical work.
"""

import argparse
import time

from bench.common import load_default_models, report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="playground bench generation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens generated per response")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (best is kept)")
    args = parser.parse_args(argv)

    models = load_default_models()
    from playground.inference.generation import generate
    from playground.inference.scheduler import Scheduler
    from playground.inference.settings import GenerationSettings

    scheduler = Scheduler(models)
    scheduler.end_ids = set()  # EOS never ends a row early, so every path generates exactly new_tokens per response
    messages = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]
    settings = GenerationSettings(temperature=0, max_new_tokens=args.new_tokens)

    def best_time(slots: list) -> float:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            generate(scheduler, slots, messages, settings)
            times.append(time.perf_counter() - start)
        return min(times)

    best_time([models.policy])  # warm-up
    rows, ratios = [], {}
    for k in (2, 4):
        slots = [models.policy if i % 2 == 0 else models.reference for i in range(k)]
        batched = best_time(slots)
        sequential = sum(best_time([s]) for s in slots)
        tokens = k * args.new_tokens
        rows.append({"k": k, "mode": "batched (one generate)", "seconds": batched, "tokens_per_s": tokens / batched})
        rows.append({"k": k, "mode": "sequential", "seconds": sequential, "tokens_per_s": tokens / sequential})
        ratios[f"k{k}_batched_over_sequential"] = sequential / batched
    report("generation", rows, {"new_tokens": args.new_tokens, "device": str(models.device), **ratios})

