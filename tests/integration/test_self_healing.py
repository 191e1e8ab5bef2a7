"""A model whose python-backend stub dies heals itself: the server's stub watch reloads it, clients retry what the
server heals, and nobody acts. Its own server: the shared one's models are not to be killed."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clients import ModelClient
from engine.errors import FinscoreError
from engine.families.churn import ChurnTrainResult
from engine.families.threat import ThreatTrainResult
from engine.serving.server import ServerPorts, TritonServer
from engine.serving.watch import SHM, stubs_of


@pytest.fixture()
def healing_server(trained: ChurnTrainResult, tmp_path: Path, audit: Path) -> Iterator[TritonServer]:
    server = TritonServer(
        trained.path.parent.parent, models=["churn"], ports=ServerPorts.free(), log_path=tmp_path / "triton.log"
    )
    with server:
        yield server


def _churn_stub(server: TritonServer) -> object:
    assert server.process is not None
    return next(s for s in stubs_of(server.process.pid) if s.model == "churn")


def _wait_for_reloads(server: TritonServer, count: int) -> None:
    assert server.watch is not None
    deadline = time.monotonic() + 180
    while len(server.watch.reloads) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(server.watch.reloads) == count, server.log_text()[-2000:]


def test_a_killed_stub_is_reloaded_and_a_retrying_client_never_sees_it(
    healing_server: TritonServer, customers: pl.DataFrame, audit: Path
) -> None:
    rows = customers.drop("churned").head(5)
    with ModelClient(healing_server.grpc_url, "churn", retry_for=180) as client:
        before = client.infer(rows)["churn_probability"]
        stub = _churn_stub(healing_server)
        os.kill(stub.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        after = client.infer(rows)["churn_probability"]  # sent into the outage: retried until the reload
    np.testing.assert_array_equal(after, before)
    _wait_for_reloads(healing_server, 1)
    assert not (SHM / stub.region).exists()  # type: ignore[attr-defined]  # the dead stub's region reclaimed
    assert _churn_stub(healing_server).pid != stub.pid  # type: ignore[attr-defined]
    log = healing_server.log_text()
    assert f"stub of model 'churn' (pid {stub.pid}) died; reloading the model" in log  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    reloads = [line for line in lines if line.get("event") == "model_reload"]
    assert [(r["model"], r["outcome"]) for r in reloads] == [("churn", "reloaded")]


def test_a_client_that_does_not_retry_gets_one_sentence_and_the_model_heals_anyway(
    healing_server: TritonServer, customers: pl.DataFrame
) -> None:
    rows = customers.drop("churned").head(3)
    with ModelClient(healing_server.grpc_url, "churn", retry_for=0) as client:
        expected = client.infer(rows)["churn_probability"]
        os.kill(_churn_stub(healing_server).pid, signal.SIGKILL)  # type: ignore[attr-defined]
        with pytest.raises(FinscoreError, match="churn") as caught:
            client.infer(rows)
        assert "\n" not in str(caught.value)
        _wait_for_reloads(healing_server, 1)
        np.testing.assert_array_equal(client.infer(rows)["churn_probability"], expected)
    process = healing_server.process
    assert process is not None
    healing_server.stop()
    # Triton stops by itself, within its exit timeout: not killed by the SIGKILL stop() keeps for a server that hangs.
    assert process.returncode is not None and process.returncode != -signal.SIGKILL


def test_a_model_unloaded_on_purpose_is_left_unloaded(healing_server: TritonServer) -> None:
    """A stub also exits when its model is unloaded (or replaced by a new version): that is no death to heal."""
    assert healing_server.watch is not None
    request = urllib.request.Request(
        f"{healing_server.http_url}/v2/repository/models/churn/unload", data=b"{}", method="POST"
    )
    urllib.request.urlopen(request, timeout=60).close()
    assert healing_server.process is not None
    deadline = time.monotonic() + 60
    while any(s.model == "churn" for s in stubs_of(healing_server.process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(10):  # ten looks of the watch after the stub is gone
        healing_server.watch.check()
    assert healing_server.watch.reloads == []
    with ModelClient(healing_server.grpc_url, "churn") as client:
        assert not client.is_ready()


@pytest.fixture()
def threat_server(threat_trained: ThreatTrainResult, tmp_path: Path, audit: Path) -> Iterator[TritonServer]:
    server = TritonServer(
        threat_trained.path.parent.parent,
        models=["threat", "threat_features"],
        ports=ServerPorts.free(),
        log_path=tmp_path / "triton.log",
    )
    with server:
        yield server


def test_a_scan_whose_stub_dies_mid_way_finishes_by_itself_with_the_clean_alerts(
    threat_server: TritonServer, events: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clients.shm import SharedMemoryModelClient
    from engine.batch.scan import ServerSpec, scan
    from tests.conftest import read_alerts

    data = tmp_path / "events.parquet"
    events.head(3000).write_parquet(data)
    spec = ServerSpec(threat_server.grpc_url, "threat", request_rows=300, matrix=True)
    clean = tmp_path / "clean.jsonl"
    scan([data], clean, spec=spec, batch_rows=1000, progress=False)

    calls = {"n": 0}
    send = SharedMemoryModelClient._infer_once

    def killing(self: SharedMemoryModelClient, *args: object, **kwargs: object) -> dict:
        calls["n"] += 1
        if calls["n"] == 4:  # mid-way through the second batch: the model's stub dies under the scan
            assert threat_server.process is not None
            stub = next(s for s in stubs_of(threat_server.process.pid) if s.model == self.model)
            os.kill(stub.pid, signal.SIGKILL)
        return send(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SharedMemoryModelClient, "_infer_once", killing)
    healed = tmp_path / "healed.jsonl"
    summary = scan([data], healed, spec=spec, batch_rows=1000, progress=False)
    assert calls["n"] > 4
    assert threat_server.watch is not None and [m for m, _ in threat_server.watch.reloads] == ["threat_features"]
    assert summary.scored == 3000 and summary.rejected == 0
    assert read_alerts(healed) == read_alerts(clean)
