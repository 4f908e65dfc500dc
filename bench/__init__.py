"""Benchmarks of the direct messages server: ``python -m bench`` (docs/benchmarks.md)."""
