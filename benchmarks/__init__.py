"""Latency and speed-ablation benchmarks (scripts that print tables; not timed tests). See docs/BENCHMARKS.md."""
