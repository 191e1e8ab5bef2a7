"""Against the real bundled Triton: clients reach churn through its feature-tensor twin, with the raw
model's answers, and fall back to raw columns where the twin is not served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clients import AsyncModelClient, ModelClient
from engine.errors import InvalidInputError, NotFoundError
from engine.families.churn import ChurnScorer
from engine.serving.server import TritonServer
from tests.conftest import request_arrays, with_holes


def _inferences(server: TritonServer) -> dict[str, int]:
    """Rows each churn model has scored so far (Triton's statistics)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as stats:
        return {
            name: sum(s.inference_count for s in stats.get_inference_statistics(model_name=name).model_stats)
            for name in ("churn", "churn_features")
        }


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert np.array_equal(got[name], want[name]), name


def test_the_client_takes_the_twin_and_answers_as_the_raw_model(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = with_holes(scorer, request_arrays(scorer, customers.head(64)))
    with ModelClient(server.grpc_url, "churn") as fast, ModelClient(server.grpc_url, "churn", features=False) as raw:
        got = fast.infer_arrays(arrays)
        assert fast.feature_route() is not None and fast.feature_route().model == "churn_features"
        assert raw.feature_route() is None
        _same(got, raw.infer_arrays(arrays))
        # Only some outputs, by the raw model's names; decoded frames as infer gives them.
        part = fast.infer_arrays(arrays, outputs=["reason_codes"])
        assert list(part) == ["reason_codes"] and np.array_equal(part["reason_codes"], got["reason_codes"])
        frame = customers.head(5)
        decoded = fast.infer(frame)
        assert decoded["reason_codes"].tolist() == raw.infer(frame)["reason_codes"].tolist()
        assert decoded["retention_action"].dtype == object and isinstance(decoded["retention_action"][0], str)


def test_the_async_client_takes_the_twin_too(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(16))

    async def both() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], object]:
        async with AsyncModelClient(server.grpc_url, "churn") as fast:
            got = await fast.infer_arrays(arrays)
            route = await fast.feature_route()
        async with AsyncModelClient(server.grpc_url, "churn", features=False) as raw:
            return got, await raw.infer_arrays(arrays), route

    got, want, route = asyncio.run(both())
    assert route is not None
    _same(got, want)


def test_a_bad_row_is_the_raw_models_sentence_before_anything_is_sent(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(3))
    text = next(c.name for c in scorer.schema.columns if c.wire == "BYTES")
    arrays[text] = arrays[text].copy()
    arrays[text][2, 0] = b"\xff\xfe"
    with ModelClient(server.grpc_url, "churn") as fast, ModelClient(server.grpc_url, "churn", features=False) as raw:
        with pytest.raises(InvalidInputError) as here:
            fast.infer_arrays(arrays)
        with pytest.raises(InvalidInputError) as there:
            raw.infer_arrays(arrays)
        assert (
            str(here.value)
            == str(there.value)
            == f"model 'churn' rejected the request: input {text!r} row 2 is not valid UTF-8 text"
        )
        # The next request on the same client is served.
        assert fast.infer_arrays({k: v[:2] for k, v in arrays.items()})["churn_probability"].shape == (2, 1)


def test_a_model_without_a_twin_goes_raw_and_requiring_one_is_one_sentence(server: TritonServer) -> None:
    with ModelClient(server.grpc_url, "threat") as client:  # threat's twin has no client encoding yet
        assert client.feature_route() is None
    with ModelClient(server.grpc_url, "recommender", features=True) as client:
        with pytest.raises(NotFoundError, match="'recommender_features' .* is not ready .* features=False"):
            client.feature_route()


def test_score_through_the_twin_writes_what_raw_columns_write(
    server: TritonServer, customers_path: Path, tmp_path: Path
) -> None:
    from engine.cli import main

    url = ["--url", server.grpc_url]
    fast, raw = tmp_path / "fast.parquet", tmp_path / "raw.parquet"
    before = _inferences(server)
    assert main(["score", "churn", "--data", str(customers_path), "--out", str(fast), *url]) == 0
    middle = _inferences(server)
    assert main(["score", "churn", "--data", str(customers_path), "--out", str(raw), "--raw-columns", *url]) == 0
    after = _inferences(server)
    rows = pl.read_parquet(customers_path).height
    # Each run went the way it says: every row to the twin, then every row to the raw model.
    assert middle["churn_features"] - before["churn_features"] == rows == after["churn"] - middle["churn"]
    assert middle["churn"] == before["churn"] and after["churn_features"] == middle["churn_features"]
    got, want = pl.read_parquet(fast), pl.read_parquet(raw)
    assert got.height == pl.read_parquet(customers_path).height
    assert got.equals(want)
