"""The fraud latency bench's bookkeeping: the cards a file's authorizations come for, and the rounds' summary."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl
import pytest

from bench import fraud_latency, perf_analyzer
from bench.fraud_latency import _cards_and_terminals, _summary


class _Point(NamedTuple):
    p50_ms: float
    p99_ms: float


def test_authorizations_come_for_the_files_cards_after_its_last_transaction() -> None:
    tx = pl.DataFrame({"card": ["b", "a", "b"], "terminal": ["t2", "t1", "t1"], "time": [5, 9_000_000, 7]})
    cards, terminals, start = _cards_and_terminals(tx)
    assert cards == ["a", "b"] and terminals == ["t1", "t2"]
    assert start == 9_000_000 + 1_000_000  # a second after the last: every card's next time is later than its last


def test_the_summary_is_each_paths_median_and_fraud_against_the_floor() -> None:
    got = {
        ("stub", "fraud_floor"): [_Point(0.3, 1.0), _Point(0.2, 0.9), _Point(0.4, 1.1)],
        ("stub", "fraud"): [_Point(0.9, 2.0), _Point(0.6, 1.5), _Point(0.7, 3.0)],
        ("tritonclient", "fraud"): [_Point(1.2, 2.5), _Point(1.0, 2.0), _Point(1.1, 2.2)],
    }
    line = _summary(1, got, "fraud_floor")
    assert "median of 3 rounds" in line
    assert "stub (floor) p50 0.300 ms p99 1.000 ms" in line
    assert "stub p50 0.700 ms p99 2.000 ms" in line and "tritonclient p50 1.100 ms p99 2.200 ms" in line
    assert line.endswith("fraud's p50 2.33x the floor's")


def test_perf_analyzer_gets_fresh_authorizations_it_never_sends_twice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    given: list[tuple[str, dict[str, np.ndarray], int]] = []

    def fake_run(
        url: str, model: str, pool: dict[str, np.ndarray], *, rows: int, **kw: object
    ) -> list[dict[str, object]]:
        given.append((model, pool, rows))
        if model == "fraud":
            raise perf_analyzer.PerfAnalyzerError("perf_analyzer failed at concurrency 1: refused")
        server = {"queue_us": 1.0, "compute_infer_us": 2.0, "avg_batch": None}
        return [{"throughput": 10.0, "p50_ms": 0.3, "p90_ms": 0.4, "p99_ms": 0.5, "server": server}]

    monkeypatch.setattr(perf_analyzer, "run", fake_run)
    auths = fraud_latency.Authorizations(["a", "b"], ["t1"], 1_000_000, workers=1)
    fraud_latency._perf_analyzer("url", auths, "fraud_floor", duration=0.01)
    assert [g[0] for g in given] == ["fraud_floor", "fraud"]
    pool, rows = given[1][1], given[1][2]
    ids = pool["transaction_id"].ravel().tolist()
    assert rows == len(ids) == len(set(ids)) > 0  # every entry sent at most once: none is refused as scored twice
    assert (np.diff(pool["timestamp"].ravel()) > 0).all()  # in turn, each card's times move forward
    out = capsys.readouterr().out
    assert "(floor)" in out and "p50  0.300 ms" in out
    assert "every output" in out and "not measured: perf_analyzer failed at concurrency 1: refused" in out
