"""Benchmarks of the instamg direct messages server: ``python -m bench`` (``make bench``).

Everything the harness measures goes through PROTOCOL.md (HTTP and WebSocket) against
real server processes that it starts and stops itself; results are written to
``bench/RESULTS.md`` and ``bench/results/``. See ``docs/benchmarks.md``.
"""
