"""Capacity benchmarks of softswitch: `python -m bench [NAME ...]` (see bench/README.md)."""
