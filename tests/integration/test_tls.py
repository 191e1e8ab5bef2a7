"""gRPC over TLS with the real Triton: mutual TLS answers only clients with a certificate its CA signed, plain
TLS answers clients that trust its CA, plaintext clients are refused, and HTTP is off."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from clients import ModelClient, Tls
from engine.cli import main
from engine.errors import FinscoreError
from engine.families.churn import ChurnTrainResult
from engine.serving.server import ServerPorts, ServerTls, TritonServer
from tests.tls_certs import Authority, Pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    bank, rogue = Authority(folder, "bank"), Authority(folder, "rogue")
    return {
        "bank": bank,
        "rogue": rogue,
        "server": bank.issue("server", server=True),
        "client": bank.issue("client", server=False),
        "rogue_client": rogue.issue("client", server=False),
    }


def _serve(trained: ChurnTrainResult, tls: ServerTls, log: Path) -> TritonServer:
    return TritonServer(trained.path.parent.parent, ports=ServerPorts.free(), models=["churn"], log_path=log, tls=tls)


@pytest.fixture(scope="module")
def mutual(trained: ChurnTrainResult, pki: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server: Pair = pki["server"]
    tls = ServerTls(server.cert, server.key, pki["bank"].ca)
    with _serve(trained, tls, tmp_path_factory.mktemp("tls") / "mutual.log") as srv:
        yield srv


def _score(url: str, tls: Tls | None, rows: pl.DataFrame) -> list[float]:
    with ModelClient(url, "churn", tls=tls, timeout=10) as client:
        return list(client.infer(rows)["churn_probability"])


def test_mutual_tls_answers_a_client_whose_certificate_its_ca_signed(
    mutual: TritonServer, pki: dict, customers: pl.DataFrame
) -> None:
    client: Pair = pki["client"]
    got = _score(mutual.grpc_url, Tls(pki["bank"].ca, client.cert, client.key), customers.head(3))
    assert len(got) == 3 and all(0.0 <= p <= 1.0 for p in got)


@pytest.mark.parametrize("who", ["plaintext", "no certificate", "certificate of another CA", "trusts another CA"])
def test_mutual_tls_refuses(who: str, mutual: TritonServer, pki: dict, customers: pl.DataFrame) -> None:
    bank, rogue, client, rogue_client = pki["bank"], pki["rogue"], pki["client"], pki["rogue_client"]
    tls = {
        "plaintext": None,
        "no certificate": Tls(bank.ca),
        "certificate of another CA": Tls(bank.ca, rogue_client.cert, rogue_client.key),
        "trusts another CA": Tls(rogue.ca, client.cert, client.key),
    }[who]
    with pytest.raises(FinscoreError) as info:
        _score(mutual.grpc_url, tls, customers.head(3))
    message = str(info.value)
    if tls is not None:
        assert "TLS" in message and mutual.grpc_url in message
    assert mutual.alive()


def test_a_tls_server_has_no_http_endpoint(mutual: TritonServer) -> None:
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{mutual.ports.http}/v2/health/ready", timeout=2)


def test_server_only_tls_answers_clients_that_trust_its_ca(
    trained: ChurnTrainResult, pki: dict, customers: pl.DataFrame, tmp_path: Path
) -> None:
    server: Pair = pki["server"]
    with _serve(trained, ServerTls(server.cert, server.key), tmp_path / "tls.log") as srv:
        assert len(_score(srv.grpc_url, Tls(pki["bank"].ca), customers.head(2))) == 2
        with pytest.raises(FinscoreError):
            _score(srv.grpc_url, None, customers.head(2))


def test_finscore_score_speaks_mutual_tls(
    mutual: TritonServer, pki: dict, customers_path: Path, tmp_path: Path
) -> None:
    client: Pair = pki["client"]
    out = tmp_path / "scores.parquet"
    tls = ["--tls-ca", str(pki["bank"].ca), "--tls-cert", str(client.cert), "--tls-key", str(client.key)]
    rc = main(["score", "churn", "--data", str(customers_path), "--out", str(out), "--url", mutual.grpc_url, *tls])
    assert rc == 0
    assert pl.read_parquet(out).height == pl.read_parquet(customers_path).height


def test_the_bench_measures_through_mutual_tls_with_perf_analyzer(
    mutual: TritonServer, pki: dict, tmp_path: Path
) -> None:
    client: Pair = pki["client"]
    out = tmp_path / "tls-bench.json"
    tls = ["--tls-ca", str(pki["bank"].ca), "--tls-cert", str(client.cert), "--tls-key", str(client.key)]
    # Concurrency 1 sends from a thread, 2 from coroutines (grpc.aio): both speak mutual TLS.
    args = ["--concurrency", "1,2", "--arrivals", "none", "--duration", "0.5", "--windows", "1", "--warmup", "0",
            "--no-baselines"]  # fmt: skip
    assert main(["bench", "churn", "--url", mutual.grpc_url, *tls, *args, "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    ours = [r for r in runs if r["target"] == "triton"]
    assert [r["level"] for r in ours] == [1, 2]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in ours), [r["first_error"] for r in ours]
    assert all(r["throughput"] > 0 for r in runs if r["target"] == "perf_analyzer")  # it too spoke mutual TLS
