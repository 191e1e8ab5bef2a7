"""Benchmarks for finscore: run each as a module, e.g. ``python -m bench.latency`` (``make bench``).

Benchmarks print figures (and optionally write them as JSON); they never assert on a time.
"""

__all__: list[str] = []
