"""Benchmarks: each measures ours against a peer (TRL, a per-round loop, the serial app) side by
side in one run, prints a table and writes `bench/results/NAME.json` (`playground bench NAME`).
Above the app's layers: a benchmark may drive the whole app, never the other way round."""
