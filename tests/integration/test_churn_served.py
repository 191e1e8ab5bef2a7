"""Against the real bundled Triton: served answers equal in-process ones, and bad requests fail alone."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients import AsyncModelClient, ModelClient
from engine.batch.score import score_file, score_file_through
from engine.errors import InvalidInputError, ServerStartError, ServerUnavailableError
from engine.families.churn import ChurnScorer, ChurnTrainResult
from engine.serving.repository import ModelRepository
from engine.serving.server import ServerPorts, TritonServer, free_port
from tests.conftest import request_arrays, with_holes


def raw_request(arrays: dict[str, np.ndarray], override: dict[str, tuple[np.ndarray, str]] | None = None) -> list:
    override = override or {}
    inputs = []
    for name, arr in arrays.items():
        arr, dtype = override.get(name, (arr, "BYTES" if arr.dtype == object else "FP32"))
        t = grpcclient.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        inputs.append(t)
    return inputs


def assert_invalid(server: TritonServer, inputs: list, fragment: str) -> None:
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        raw.infer("churn", inputs)
    assert "INVALID_ARGUMENT" in str(info.value.status()), info.value
    assert fragment in info.value.message()
    assert raw.is_server_live() and raw.is_model_ready("churn")


def test_metadata_lists_every_input(server: TritonServer, scorer: ChurnScorer) -> None:
    with ModelClient(server.grpc_url, "churn") as client:
        assert [(i.name, i.datatype) for i in client.inputs] == [
            (c.name, "BYTES" if c.wire == "BYTES" else "FP32") for c in scorer.schema.columns
        ]
        assert client.outputs == ["churn_probability", "reason_codes", "retention_action"]
        assert client.id_column() == "customer_id"


def test_served_equals_in_process(server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    frame = customers.head(400)
    with ModelClient(server.grpc_url, "churn") as client:
        served = client.infer(frame)
    local = scorer.score(request_arrays(scorer, frame))
    np.testing.assert_allclose(served["churn_probability"], local["churn_probability"], rtol=0, atol=1e-6)
    assert served["reason_codes"].tolist() == local["reason_codes"].tolist()
    assert served["retention_action"].tolist() == local["retention_action"].tolist()


def test_wrong_dtype_missing_input_and_mismatched_rows(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(2))
    num = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    assert_invalid(server, raw_request(arrays, {num: (arrays[num].astype(np.int32), "INT32")}), num)
    without = {k: v for k, v in arrays.items() if k != num}
    assert_invalid(server, raw_request(without), num)
    assert_invalid(server, raw_request(arrays, {num: (np.zeros((3, 1), np.float32), "FP32")}), "")


def test_values_the_model_rejects_get_invalid_argument(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(2))
    num = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    txt = next(c.name for c in scorer.schema.columns if c.wire == "BYTES")
    assert_invalid(server, raw_request(arrays, {num: (np.array([[np.inf], [1]], np.float32), "FP32")}), "infinite")
    bad_text = np.array([[b"\xff\xfe"], [b"ok"]], dtype=object)
    assert_invalid(server, raw_request(arrays, {txt: (bad_text, "BYTES")}), "UTF-8")


def test_missing_values_and_unseen_categories_are_scored(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = with_holes(scorer, request_arrays(scorer, customers.head(3)))
    with ModelClient(server.grpc_url, "churn") as client:
        served = client.infer_arrays(arrays)
    local = scorer.score(arrays)
    assert np.isfinite(served["churn_probability"]).all()
    np.testing.assert_allclose(served["churn_probability"][:, 0], local["churn_probability"], atol=1e-6)


def test_oversized_batch_is_refused(server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    big = pl.concat([customers] * 2).head(4097)
    assert_invalid(server, raw_request(request_arrays(scorer, big)), "batch-size must be <= 4096")


def test_bad_requests_do_not_harm_the_rest_of_the_batch(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    num = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    rows = [customers.slice(i, 1) for i in range(24)]
    expected = scorer.score(request_arrays(scorer, customers.head(24)))["churn_probability"]

    async def fire() -> list[object]:
        async with AsyncModelClient(server.grpc_url, "churn") as client:
            await client.load_metadata()
            calls = []
            for i, row in enumerate(rows):
                arrays = request_arrays(scorer, row)
                if i % 3 == 1:
                    arrays[num] = np.array([[np.inf]], np.float32)
                calls.append(client.infer_arrays(arrays))
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(fire())
    for i, result in enumerate(results):
        if i % 3 == 1:
            assert isinstance(result, InvalidInputError) and "infinite" in str(result)
        else:
            assert isinstance(result, dict), result
            assert abs(float(result["churn_probability"][0, 0]) - float(expected[i])) < 1e-6


def test_bulk_through_server_equals_local(
    server: TritonServer, scorer: ChurnScorer, customers_path: Path, tmp_path: Path
) -> None:
    with ModelClient(server.grpc_url, "churn") as client:
        inputs = [(i.name, i.datatype) for i in client.inputs]
        served = score_file_through(client, customers_path, tmp_path / "s.parquet", request_rows=500, progress=False)
    local = score_file(
        customers_path,
        tmp_path / "l.parquet",
        score=scorer.score,
        inputs=inputs,
        id_column="customer_id",
        request_rows=500,
        progress=False,
    )
    assert served.scored == local.scored == served.rows_read
    a, b = pl.read_parquet(tmp_path / "s.parquet"), pl.read_parquet(tmp_path / "l.parquet")
    assert a.drop("churn_probability").equals(b.drop("churn_probability"))
    assert (a.get_column("churn_probability") - b.get_column("churn_probability")).abs().max() < 1e-6


def test_client_against_a_down_server_says_so() -> None:
    with ModelClient(f"127.0.0.1:{free_port()}", "churn", timeout=5) as client:
        with pytest.raises(ServerUnavailableError, match="no Triton server answers"):
            client.infer({"x": [1.0]})


def test_model_that_fails_to_load_is_named(trained: ChurnTrainResult, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(trained.path.parent, repo / "churn")
    version = ModelRepository(repo).latest("churn")
    (version / "model.ubj").write_bytes(b"corrupt")
    server = TritonServer(repo, ports=ServerPorts.free(), log_path=tmp_path / "t.log")
    with pytest.raises(ServerStartError, match="model 'churn' version .* failed to load"):
        server.start()
    assert not server.alive()


def test_serve_command_starts_refuses_taken_port_and_stops(
    server: TritonServer, trained: ChurnTrainResult, tmp_path: Path
) -> None:
    finscore = [sys.executable, "-m", "engine.cli"]
    repo = str(trained.path.parent.parent)
    taken = subprocess.run(
        [*finscore, "serve", "--repo", repo, "--grpc-port", str(server.ports.grpc)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert taken.returncode == 1
    assert f"port {server.ports.grpc} (gRPC)" in taken.stderr and "already in use" in taken.stderr

    free = ServerPorts.free()
    ports = [free.grpc, free.http, free.metrics]
    proc = subprocess.Popen(
        [
            *finscore,
            "serve",
            "--repo",
            repo,
            "--grpc-port",
            str(ports[0]),
            "--http-port",
            str(ports[1]),
            "--metrics-port",
            str(ports[2]),
            "--log",
            str(tmp_path / "serve.log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready("churn"):
                    break
            except InferenceServerException:
                pass
            time.sleep(0.2)
        assert client.is_model_ready("churn")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Triton stopped." in out
