"""Benchmarks for finscore: ``finscore bench MODEL`` (:mod:`bench.suite`, ``make bench``) for served models, and
modules run on their own, e.g. ``python -m bench.scan`` (``make bench-scan``).

Benchmarks print figures (and write them as JSON); they never assert on a time.
"""

import engine  # noqa: F401  (first: it sets gRPC's client up before grpc is imported, see engine.grpc_env)

__all__: list[str] = []
