"""Scans through the real Triton: the same alerts as in-process, over shared memory and plain gRPC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from engine.batch.scan import LocalSpec, ServerSpec, scan
from engine.families.threat.train import ThreatTrainResult
from engine.serving.server import TritonServer
from tests.conftest import read_alerts


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory: pytest.TempPathFactory, events: pl.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("served_scan") / "events.csv"
    bad = events.head(2500).with_columns(pl.all().cast(pl.String))
    bad = bad.with_columns(
        pl.when(pl.int_range(pl.len()) == 17).then(pl.lit("n/a?")).otherwise(pl.col("duration_s")).alias("duration_s")
    )
    bad.write_csv(path)
    return path


@pytest.mark.parametrize(
    ("shared_memory", "matrix"),
    [(True, True), (False, True), (True, False), (False, False)],
    ids=["shm-matrix", "grpc-matrix", "shm-raw", "grpc-raw"],
)
def test_served_scan_equals_local_scan(
    server: TritonServer,
    threat_trained: ThreatTrainResult,
    scan_file: Path,
    tmp_path: Path,
    shared_memory: bool,
    matrix: bool,
) -> None:
    local = tmp_path / "local.jsonl"
    scan([scan_file], local, spec=LocalSpec(str(threat_trained.path)), batch_rows=1000, progress=False)
    served = tmp_path / "served.jsonl"
    summary = scan(
        [scan_file],
        served,
        spec=ServerSpec(server.grpc_url, "threat", shared_memory=shared_memory, request_rows=300, matrix=matrix),
        batch_rows=1000,
        progress=False,
    )
    client = "SharedMemoryModelClient" if shared_memory else "ModelClient"
    assert summary.transport == f"{client}, {'feature matrices' if matrix else 'raw columns'}"
    assert summary.rejected == 1 and summary.scored == 2499
    assert summary.version == threat_trained.path.name
    a, b = read_alerts(local), read_alerts(served)
    assert [x["finscore"]["row"] for x in a] == [x["finscore"]["row"] for x in b]
    for x, y in zip(a, b, strict=True):
        assert x["finscore"]["top_features"] == y["finscore"]["top_features"]
        assert (
            abs(x["finscore"]["anomaly_score"] - y["finscore"]["anomaly_score"])
            <= 1e-5 * x["finscore"]["anomaly_score"]
        )
    assert b[0]["finscore"]["threshold"] == pytest.approx(threat_trained.threshold)


def test_scan_command_through_the_server(server: TritonServer, scan_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "alerts.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "scan", str(scan_file), "--out", str(out), "--url", server.grpc_url]
        + ["--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "read 2,500 rows from 1 file, scored 2,499, rejected 1" in done.stdout
    assert pl.read_parquet(out).height > 0


def test_scan_against_a_down_server_is_one_sentence(scan_file: Path, tmp_path: Path) -> None:
    from engine.serving.server import free_port

    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "scan", str(scan_file), "--out", str(tmp_path / "a.jsonl")]
        + ["--url", f"127.0.0.1:{free_port()}", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: no Triton server answers") and done.stderr.count("\n") == 1


def test_a_scans_requests_carry_as_many_rows_as_the_model_takes(server: TritonServer) -> None:
    from clients import ModelClient
    from engine.batch.scan.backends import close_backends, open_backend

    spec = ServerSpec(server.grpc_url, "threat", matrix=True)
    try:
        backend = open_backend(spec)
        with ModelClient(server.grpc_url, "threat_features") as client:
            most = client.max_batch_size()
        assert most > 8192 and backend.request_rows == most  # type: ignore[attr-defined]
    finally:
        close_backends()


def test_more_rows_per_request_than_the_model_takes_is_one_sentence(
    server: TritonServer, scan_file: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "scan", str(scan_file), "--out", str(tmp_path / "a.jsonl")]
        + ["--url", server.grpc_url, "--request-rows", "40000", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    said = done.stderr.strip()
    assert said.count("\n") == 0 and "Traceback" not in said, said
    assert "40000 rows per request (--request-rows) is not what model 'threat_features' takes: 1 to 32768" in said
