"""A real Prometheus (Debian's package) scraping the session's real Triton with the repository's own scrape
config: finscore's score histogram and refusal counter come back through Prometheus' HTTP API after scored and
refused requests, equal to what Triton's metrics port shows."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients import ModelClient
from engine.families.churn import ChurnScorer
from engine.serving.server import TritonServer, free_port
from tests.conftest import debian_tool, request_arrays

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "monitoring" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


@pytest.fixture(scope="module")
def prometheus(server: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus on a free port, scraping the test server's metrics port every second: its base URL."""
    exe = debian_tool("prometheus", require="FINSCORE_REQUIRE_PROMETHEUS")
    folder = tmp_path_factory.mktemp("prometheus")
    config = CONFIG.read_text().replace("127.0.0.1:8002", f"127.0.0.1:{server.ports.metrics}")
    assert str(server.ports.metrics) in config, "the scrape config no longer names Triton's default metrics port"
    (folder / "prometheus.yml").write_text(config.replace("scrape_interval: 15s", "scrape_interval: 1s"))
    port = free_port()
    cmd = [
        exe,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (folder / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(f"{url}/-/ready")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"prometheus did not start: {(folder / 'prometheus.log').read_text()[-800:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _query(prometheus: str, expr: str) -> dict[str, float]:
    """An instant query's series, each by its labels (as text) with its value."""
    answer = json.loads(_get(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"))
    assert answer["status"] == "success", answer
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in answer["data"]["result"]}


def _triton(server: TritonServer, name: str, **labels: str) -> float:
    """The value of one series on Triton's own metrics port (0 when it is not there yet)."""
    for line in _get(f"http://127.0.0.1:{server.ports.metrics}/metrics").splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{") and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return 0.0


def _until(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_prometheus_reads_the_score_histogram_and_the_refusals(
    server: TritonServer, prometheus: str, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    churn = {"model": "churn", "version": "1"}
    scored_before = _triton(server, "finscore_score_count", **churn)
    refused_before = _triton(server, "finscore_rejected_total", reason="invalid_input", **churn)
    arrays = request_arrays(scorer, customers.head(7))
    raw = grpcclient.InferenceServerClient(server.grpc_url)

    def inputs(columns: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
        out = []
        for name, arr in columns.items():
            t = grpcclient.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else "FP32")
            t.set_data_from_numpy(arr)
            out.append(t)
        return out

    answer = raw.infer("churn", inputs(arrays))
    probabilities = answer.as_numpy("churn_probability").reshape(-1)
    number = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    infinite = {**arrays, number: np.full_like(arrays[number], np.inf)}
    with pytest.raises(InferenceServerException, match="infinite"):  # refused by the model, not by Triton
        raw.infer("churn", inputs(infinite))

    # Triton's port first (the model sends its counts every second), then the same through Prometheus.
    _until(lambda: _triton(server, "finscore_score_count", **churn) >= scored_before + 7, "the scores on Triton")
    _until(
        lambda: _triton(server, "finscore_rejected_total", reason="invalid_input", **churn) >= refused_before + 1,
        "the refusal on Triton",
    )
    scored = _triton(server, "finscore_score_count", **churn)
    refused = _triton(server, "finscore_rejected_total", reason="invalid_input", **churn)
    sel = 'model="churn",version="1"'
    _until(
        lambda: (
            list(_query(prometheus, f"finscore_score_count{{{sel}}}").values()) == [scored]
            and list(_query(prometheus, f'finscore_rejected_total{{{sel},reason="invalid_input"}}').values())
            == [refused]
        ),
        "Prometheus to scrape the counts Triton shows",
    )
    buckets = _query(prometheus, f"finscore_score_bucket{{{sel}}}")
    by_le = {json.loads(k)["le"]: v for k, v in buckets.items()}
    assert by_le["+Inf"] == scored and all(v <= scored for v in by_le.values())
    at_half = sum(1 for p in probabilities if p <= 0.5)
    assert by_le["0.5"] >= at_half  # this request's scores at or below 0.5 are among the bucket's
    # What a Grafana panel asks: a quantile of the scores, from the buckets as Prometheus reads them.
    (median,) = _query(prometheus, f"histogram_quantile(0.5, sum by (le) (finscore_score_bucket{{{sel}}}))").values()
    assert 0.0 <= median <= 1.0
    # Triton's own figures for the same model come through the same scrape.
    assert _query(prometheus, 'nv_inference_request_success{model="churn"}')


def test_the_grafana_dashboards_queries_run_on_series_prometheus_has(
    server: TritonServer, prometheus: str, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    with ModelClient(server.grpc_url, "churn") as client:
        client.infer(customers.head(3))
    names: set[str] = set()
    _until(
        lambda: (
            names.update(json.loads(_get(f"{prometheus}/api/v1/label/__name__/values"))["data"]) is None
            and {"finscore_score_bucket", "nv_inference_request_success"} <= names
        ),
        "Prometheus to scrape Triton",
    )
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= 6
    for expr in exprs:
        used = set(re.findall(r"\b(?:nv|finscore)_[a-z_]+", expr))
        assert used and used <= names, f"{sorted(used - names)} not scraped: {expr}"
        _query(prometheus, expr.replace("$model", ".*"))  # PromQL Prometheus accepts
