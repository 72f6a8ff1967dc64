"""Benchmarks of heylookllm against its peers; run with `python benchmarks/run.py` (see README.md)."""
