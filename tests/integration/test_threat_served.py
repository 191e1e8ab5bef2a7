"""The threat model served by the real Triton: same answers as in-process, errors per request."""

from __future__ import annotations

import asyncio

import numpy as np
import polars as pl
import pytest

from clients import AsyncModelClient, ModelClient
from engine.errors import InvalidInputError
from engine.families.threat import ThreatScorer
from engine.serving.server import TritonServer
from tests.conftest import request_arrays


def test_served_threat_equals_in_process(
    server: TritonServer, threat_scorer: ThreatScorer, events: pl.DataFrame
) -> None:
    frame = events.head(500)
    with ModelClient(server.grpc_url, "threat") as client:
        assert [i.name for i in client.inputs] == threat_scorer.schema.names
        assert client.id_column() == "event_id"
        served = client.infer(frame)
    local = threat_scorer.score_frame(frame)
    np.testing.assert_allclose(served["anomaly_score"], local["anomaly_score"], rtol=1e-5)
    assert served["is_threat"].dtype == bool
    assert (served["is_threat"] == local["is_threat"]).all()
    assert served["top_features"].tolist() == local["top_features"].tolist()


def test_a_bad_request_fails_alone_in_a_batch(
    server: TritonServer, threat_scorer: ThreatScorer, events: pl.DataFrame
) -> None:
    good = request_arrays(threat_scorer, events.head(2))
    bad = request_arrays(threat_scorer, events.head(2))
    bad["bytes_in"] = bad["bytes_in"].astype(np.float64)

    async def run() -> list[object]:
        async with AsyncModelClient(server.grpc_url, "threat") as client:
            calls = [client.infer_arrays(good), client.infer_arrays(bad), client.infer_arrays(good)]
            return await asyncio.gather(*calls, return_exceptions=True)

    first, failed, last = asyncio.run(run())
    assert isinstance(failed, InvalidInputError)
    assert "bytes_in" in str(failed)
    assert isinstance(first, dict) and isinstance(last, dict)
    np.testing.assert_array_equal(first["anomaly_score"], last["anomaly_score"])


def test_oversized_batch_is_refused_with_the_limit(
    server: TritonServer, threat_scorer: ThreatScorer, events: pl.DataFrame
) -> None:
    from engine.families.threat.train import MAX_BATCH

    arrays = request_arrays(threat_scorer, events.head(1))
    big = {k: np.repeat(v, MAX_BATCH + 1, axis=0) for k, v in arrays.items()}
    with ModelClient(server.grpc_url, "threat") as client:
        with pytest.raises(InvalidInputError, match=str(MAX_BATCH)):
            client.infer_arrays(big)
        assert client.infer_arrays(arrays)["anomaly_score"].shape == (1, 1)


def test_a_request_for_the_score_alone_gets_no_reasons(
    server: TritonServer, threat_scorer: ThreatScorer, events: pl.DataFrame
) -> None:
    arrays = request_arrays(threat_scorer, events.head(50))
    with ModelClient(server.grpc_url, "threat") as client:
        some = client.infer_arrays(arrays, outputs=["anomaly_score", "is_threat"])
        every = client.infer_arrays(arrays)
    assert set(some) == {"anomaly_score", "is_threat"}
    np.testing.assert_array_equal(some["anomaly_score"], every["anomaly_score"])
    assert every["top_features"].shape == (50, 3)


def test_matrix_twin_is_served_and_refuses_a_wrong_width(server: TritonServer, threat_scorer: ThreatScorer) -> None:
    width = len(threat_scorer.features.names)
    with ModelClient(server.grpc_url, "threat_features") as client:
        assert [(i.name, i.datatype) for i in client.inputs] == [("features", "FP32")]
        out = client.infer_arrays({"features": np.zeros((4, width), np.float32)})
        assert out["top_columns"].shape == (4, 3) and out["top_columns"].dtype == np.int32
        with pytest.raises(InvalidInputError):
            client.infer_arrays({"features": np.zeros((4, width + 1), np.float32)})
        np.testing.assert_array_equal(
            client.infer_arrays({"features": np.zeros((4, width), np.float32)})["anomaly_score"], out["anomaly_score"]
        )
