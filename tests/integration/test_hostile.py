"""A hostile-input campaign against the real server (a seeded sample of ``python -m bench.hostile``): every
request is answered, none hangs, the valid requests among them are scored, and the server stays up."""

from __future__ import annotations

import polars as pl

from bench.hostile import MUTATIONS, process_tree_rss, run_campaign
from bench.hostile_targets import targets_for
from engine.serving.server import TritonServer

T0 = 2_000_000_000_000_000  # later than every authorization the other tests send


def test_hostile_requests_get_errors_and_valid_ones_scores(
    server: TritonServer, customers: pl.DataFrame, events: pl.DataFrame
) -> None:
    targets = targets_for(server.grpc_url, customers=customers.head(200), events=events.head(200), fraud_start_us=T0)
    assert server.process is not None
    c = run_campaign(
        server.grpc_url, targets, requests=900, threads=6, seed=1, server_pid=server.process.pid, warmup=30
    )
    print(c.line())
    assert c.alive and c.hangs == 0
    assert c.good_failed == []
    assert set(c.by_mutation) >= {*MUTATIONS, "valid"}  # every kind was tried
    refused = sum(v for k, v in c.answered.items() if k != "ok")
    assert refused > 500 and set(c.answered) - {"ok"} <= {"StatusCode.INVALID_ARGUMENT"}
    assert c.answered["ok"] >= c.by_mutation["valid"]
    assert process_tree_rss(server.process.pid) > 0
