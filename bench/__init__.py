"""skyops benchmarks: each ``bench_*.py`` module has ``main(argv) -> int`` and prints its
figures side by side with a baseline, writing JSON under ``bench/results/``."""
