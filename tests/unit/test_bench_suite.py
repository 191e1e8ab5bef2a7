"""The benchmark suite's parts without a server: the loops, the requests, the sweep's choice and the command."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from bench import load
from bench.cli import bench_command
from bench.sweep import apply, choose, with_settings
from bench.targets import _AsyncConnection, _infer_request, _json_rows, _status_and_length, request_pool
from engine.cli import main
from engine.errors import InvalidInputError
from engine.families.churn.train import churn_config
from engine.serving.config import render_config
from engine.tables.schema import infer_schema


class OneAtATime:
    """A fake server that answers one request at a time, each taking ``service`` seconds; request numbers that
    are multiples of ``fail_every`` get an error answer."""

    name, batch = "fake", 1

    def __init__(self, service: float, fail_every: int = 0) -> None:
        self.service, self.fail_every = service, fail_every
        self.lock = threading.Lock()

    def worker(self):  # noqa: ANN201 - the Target protocol's shape
        def call(i: int) -> None:
            with self.lock:
                time.sleep(self.service)
            if self.fail_every and i % self.fail_every == 0:
                raise RuntimeError("bad request")

        return call

    def close(self) -> None:
        pass


class OneAtATimeAsync(OneAtATime):
    """The same fake server, driven by coroutines (from ``coroutines_from`` workers up); it notes which way."""

    def __init__(self, service: float, fail_every: int = 0, coroutines_from: int = 1) -> None:
        super().__init__(service, fail_every)
        self.coroutines_from = coroutines_from
        self.ways: set[str] = set()

    def worker(self):  # noqa: ANN201
        self.ways.add("thread")
        return super().worker()

    @asynccontextmanager
    async def async_workers(self, n: int):  # noqa: ANN201
        self.ways.add("coroutine")
        lock = asyncio.Lock()

        async def call(i: int) -> None:
            async with lock:
                await asyncio.sleep(self.service)
            if self.fail_every and i % self.fail_every == 0:
                raise RuntimeError("bad request")

        yield [call] * n


def test_hdr_percentiles_agree_with_numpy() -> None:
    values_us = np.random.default_rng(1).lognormal(7, 1, size=20_000).astype(np.int64) + 1
    hist = load.new_histogram()
    for v in values_us:
        hist.record_value(int(v))
    got = load._percentiles(hist)
    for key, q in (("p50_ms", 50), ("p99_ms", 99), ("p999_ms", 99.9)):
        assert got[key] == pytest.approx(np.percentile(values_us, q) / 1000, rel=0.01)
    assert got["max_ms"] == pytest.approx(values_us.max() / 1000, rel=0.001)


def test_arrival_times_constant_and_poisson() -> None:
    constant = load.arrival_times(100, 2.0)
    assert len(constant) == 200 and np.allclose(np.diff(constant), 0.01)
    poisson = load.arrival_times(1000, 20.0, arrivals="poisson", seed=3)
    assert len(poisson) == pytest.approx(20_000, rel=0.05)
    gaps = np.diff(poisson)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps: CV 1
    assert np.array_equal(poisson, load.arrival_times(1000, 20.0, arrivals="poisson", seed=3))
    with pytest.raises(ValueError, match="constant' or 'poisson"):
        load.arrival_times(10, 1.0, arrivals="bursty")


@pytest.mark.parametrize("target", [OneAtATime, OneAtATimeAsync], ids=["threads", "coroutines"])
def test_closed_loop_counts_answers_and_errors(target: type[OneAtATime]) -> None:
    fake = target(0.002, fail_every=4)
    m = load.closed_loop(fake, concurrency=3, duration=0.6, warmup=0.1)
    assert getattr(fake, "ways", {"thread"}) == ({"coroutine"} if target is OneAtATimeAsync else {"thread"})
    assert m.requests > 0 and m.errors > 0
    assert m.first_error == "bad request"
    assert m.errors == pytest.approx((m.requests + m.errors) / 4, rel=0.5)
    assert m.throughput == m.requests / 0.6


def test_closed_loop_windows_each_count_their_own_answers_and_average() -> None:
    fake = OneAtATime(0.002)
    slow_from = time.perf_counter() + 0.1 + 0.4  # the second window's server is four times slower
    call = fake.worker()

    def worker():  # noqa: ANN202
        def slowing(i: int) -> None:
            call(i)
            if time.perf_counter() >= slow_from:
                time.sleep(0.006)

        return slowing

    fake.worker = worker  # type: ignore[method-assign]
    m = load.closed_loop(fake, concurrency=1, duration=0.4, warmup=0.1, windows=2)
    first, second = m.window_throughputs
    assert second < first / 2
    assert m.seconds == pytest.approx(0.8)
    assert m.throughput == pytest.approx((first + second) / 2)
    assert sum(m.window_throughputs) * 0.4 == pytest.approx(m.requests)
    assert load.closed_loop(fake, concurrency=1, duration=0.1, warmup=0.0).window_throughputs == []
    with pytest.raises(ValueError, match="at least one window"):
        load.closed_loop(fake, concurrency=1, duration=0.1, windows=0)


def test_closed_loop_uses_coroutines_from_the_targets_own_concurrency() -> None:
    fake = OneAtATimeAsync(0.001, coroutines_from=2)
    one = load.closed_loop(fake, concurrency=1, duration=0.2, warmup=0.0)
    assert fake.ways == {"thread"} and one.requests > 0
    two = load.closed_loop(fake, concurrency=2, duration=0.2, warmup=0.0)
    assert fake.ways == {"thread", "coroutine"} and two.requests > 0


def test_async_http_connection_reads_answers_by_length_and_reconnects() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers 200, then 400; then closes the connection (as a server restarting would).
        try:
            for status, body in ((200, b'{"ok": 1}'), (400, b"amount is NaN")):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
        except asyncio.IncompleteReadError:
            pass  # the client hung up first
        finally:
            writer.close()
            await writer.wait_closed()

    async def run() -> list[str]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn, seen = _AsyncConnection("127.0.0.1", port), []
        message = b"POST /score HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        for _ in range(4):  # 200, 400, a closed connection, then 200 on a new one
            try:
                await conn.exchange(message)
                seen.append("ok")
            except Exception as exc:
                seen.append(type(exc).__name__ + ": " + str(exc)[:20])
        await conn.aclose()
        server.close()
        await server.wait_closed()
        return seen

    seen = asyncio.run(run())
    assert seen[:2] == ["ok", "RuntimeError: HTTP 400: amount is "]
    assert seen[2].startswith("IncompleteReadError") and seen[3] == "ok"
    with pytest.raises(RuntimeError, match="without a Content-Length"):
        _status_and_length(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")


@pytest.mark.parametrize("target", [OneAtATime, OneAtATimeAsync], ids=["threads", "coroutines"])
def test_open_loop_above_capacity_counts_the_wait_a_closed_loop_hides(target: type[OneAtATime]) -> None:
    # 200 answers/s at most, 400 asked for, 4 requests in flight at most: the backlog grows every second.
    fake = target(0.005)
    m = load.open_loop(fake, rate=400, duration=2.0, warmup=0.0, drain=30, slots=4)
    assert getattr(fake, "ways", {"thread"}) == ({"coroutine"} if target is OneAtATimeAsync else {"thread"})
    assert m.errors == 0 and m.service["scheduled"] == 800
    assert m.p99_ms > 5 * m.service["p99_ms"]  # from the intended send vs from the actual send
    timeline = m.service["p50_by_second_ms"]
    assert len(timeline) == 2 and timeline[1] > timeline[0]
    below = load.open_loop(target(0.001), rate=50, duration=1.0, warmup=0.0)
    assert below.requests == pytest.approx(50, abs=3) and below.p99_ms < m.p50_ms


@pytest.mark.parametrize("target", [OneAtATime, OneAtATimeAsync], ids=["threads", "coroutines"])
def test_open_loop_counts_requests_never_answered(target: type[OneAtATime]) -> None:
    # Each answer takes 0.5 s, one at a time: of 10 requests sent in 0.5 s, about one is answered within the
    # 0.6 s drain after the last send.
    m = load.open_loop(target(0.5), rate=20, duration=0.5, warmup=0.0, drain=0.6, slots=16)
    assert m.service["scheduled"] == 10
    assert 7 <= m.errors <= 9 and "unanswered 0.6 s after the last send" in m.first_error


def test_infer_request_carries_the_bytes_tritonclient_would_send() -> None:
    arrays = {
        "amount": np.array([[1.5], [np.nan]], dtype=np.float32),
        "plan": np.array([[b"gold"], [b""]], dtype=object),
    }
    req = _infer_request("churn", arrays, {"amount": "FP32", "plan": "BYTES"}, ["churn_probability"])
    decoded = service_pb2.ModelInferRequest.FromString(req.SerializeToString())
    for k, (name, arr) in enumerate(arrays.items()):
        expected = grpcclient.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else "FP32")
        expected.set_data_from_numpy(arr)
        assert decoded.raw_input_contents[k] == expected._get_content()
        assert list(decoded.inputs[k].shape) == [2, 1]
    assert [o.name for o in decoded.outputs] == ["churn_probability"]


def test_request_pool_from_metadata_and_json_bodies() -> None:
    inputs = [
        SimpleNamespace(name="x", datatype="FP32", shape=[-1, 1]),
        SimpleNamespace(name="features", datatype="FP32", shape=[-1, 5]),
        SimpleNamespace(name="plan", datatype="BYTES", shape=[-1, 1]),
    ]
    pool = request_pool(inputs, rows=10)
    assert pool["x"].shape == (10, 1) and pool["x"].dtype == np.float32
    assert pool["features"].shape == (10, 5)
    assert pool["plan"].dtype == object and isinstance(pool["plan"][0, 0], bytes)
    body = json.loads(_json_rows({"x": np.array([[1.0], [np.nan]], dtype=np.float32), "plan": pool["plan"][:2]}))
    assert body["inputs"]["x"] == [1.0, None]
    assert body["inputs"]["plan"] == [v.decode() for v in pool["plan"][:2, 0]]
    with pytest.raises(InvalidInputError, match="cannot generate"):
        request_pool([SimpleNamespace(name="d", datatype="TUPLE", shape=[-1, 1])], rows=2)


def test_request_pool_sends_optional_inputs_only_when_the_data_has_them(tmp_path: Path) -> None:
    """A recommender request is a customer id; its k and profile fields are optional: random data leaves them out,
    a file sends the ones it has, and a required input the file lacks is one sentence."""
    import polars as pl

    inputs = [
        SimpleNamespace(name="customer_id", datatype="BYTES", shape=[-1, 1]),
        SimpleNamespace(name="k", datatype="INT32", shape=[-1, 1]),
        SimpleNamespace(name="age", datatype="FP32", shape=[-1, 1]),
    ]
    assert set(request_pool(inputs, rows=4, optional={"k", "age"})) == {"customer_id"}
    data = tmp_path / "customers.parquet"
    pl.DataFrame({"customer_id": ["K1", "K2"], "age": [40, 51]}).write_parquet(data)
    pool = request_pool(inputs, rows=4, data=data, model="recommender", optional={"k", "age"})
    assert set(pool) == {"customer_id", "age"} and pool["age"].dtype == np.float32
    assert set(pool["customer_id"].ravel()) <= {b"K1", b"K2"}
    with pytest.raises(InvalidInputError, match="needs column 'k'"):
        request_pool(inputs, rows=4, data=data, model="recommender", optional={"age"})


def test_with_settings_changes_only_the_three_settings() -> None:
    config = {"name": "churn", "max_batch_size": 4096, "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
              "dynamic_batching": {"max_queue_delay_microseconds": "0", "preserve_ordering": False,
                                   "preferred_batch_size": [4096]}}  # fmt: skip
    out = with_settings(config, instances=2, delay_us=500, max_batch=256)
    assert out["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert out["dynamic_batching"] == {"max_queue_delay_microseconds": 500, "preserve_ordering": False}
    assert out["max_batch_size"] == 256 and out["name"] == "churn"
    assert with_settings(config, instances=1, delay_us=0, max_batch=4096)["dynamic_batching"][
        "preferred_batch_size"
    ] == [4096]
    assert config["max_batch_size"] == 4096  # the original is untouched


def test_choose_takes_the_fastest_within_budget_and_without_errors() -> None:
    configs = [
        {"instances": 1, "throughput": 1000.0, "p99_ms": 5.0, "errors": 0},
        {"instances": 2, "throughput": 3000.0, "p99_ms": 30.0, "errors": 0},  # over budget
        {"instances": 3, "throughput": 2500.0, "p99_ms": 8.0, "errors": 2},  # errors
        {"instances": 4, "throughput": 1800.0, "p99_ms": 9.0, "errors": 0},
    ]
    assert choose(configs, 10.0)["instances"] == 4
    assert choose(configs, 50.0)["instances"] == 2
    assert choose(configs, 1.0) is None


def test_apply_rewrites_a_finscore_config(tmp_path: Path, customers) -> None:  # noqa: ANN001
    schema = infer_schema(customers, label="churned", id_column="customer_id")
    path = tmp_path / "config.pbtxt"
    path.write_text(render_config(churn_config(schema)), encoding="utf-8")
    apply(path, {"instances": 2, "delay_us": 250, "max_batch": 8192})
    text = path.read_text(encoding="utf-8")
    assert "max_batch_size: 8192" in text and "count: 2 kind: KIND_CPU" in text
    assert "max_queue_delay_microseconds: 250" in text
    (tmp_path / "other.pbtxt").write_text('name: "x"\nbackend: "onnxruntime"\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match="not written by finscore"):
        apply(tmp_path / "other.pbtxt", {"instances": 1, "delay_us": 0, "max_batch": 8})


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--arrivals", "bursty"], "--arrivals takes constant, poisson or none, not bursty"),
        (["--apply"], "--apply writes the sweep's choice: add --sweep"),
        (["--duration", "0"], "--duration must be positive"),
        (["--windows", "0"], "--windows must be at least 1"),
        (["--concurrency", "0,4"], "--concurrency levels must be at least 1"),
    ],
)
def test_bad_options_are_one_sentence(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "churn", *args]) == 2  # a flag used wrongly: a usage error
    assert capsys.readouterr().err.strip() == f"Error: {fragment}"


def _figures(throughput: float) -> dict:
    run = {"target": "triton", "config": "default", "mode": "closed", "level": 16, "batch": 1, "requests": 10,
           "errors": 0, "seconds": 1.0, "throughput": throughput, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0,
           "p999_ms": 4.0, "max_ms": 5.0, "server": None}  # fmt: skip
    machine = {"cores": 2, "cpu": "test", "python": "3.11", "load_1m_before": 0.0, "tritonserver": "2.51.0"}
    return {"machine": machine, "settings": {"model": "churn"}, "runs": [run], "sweep": None}


def test_compare_exits_1_on_a_regression(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_figures(2000.0)), encoding="utf-8")
    monkeypatch.setattr("bench.suite.run", lambda plan: _figures(1000.0))
    args = ["bench", "churn", "--json", str(tmp_path / "new.json"), "--compare", str(old)]
    assert main(args) == 1
    assert "REGRESSION" in capsys.readouterr().out
    monkeypatch.setattr("bench.suite.run", lambda plan: _figures(1980.0))
    assert main(args) == 0
    assert (tmp_path / "new.md").is_file() and (tmp_path / "new-latency.png").is_file()
    assert bench_command  # the command body main() dispatches to


def test_triton_target_names_its_clients() -> None:
    from bench.targets import TritonTarget

    with pytest.raises(InvalidInputError, match="'stub' or 'tritonclient', not 'rest'"):
        TritonTarget("127.0.0.1:1", "churn", {}, SimpleNamespace(inputs=[], outputs=[]), client="rest")


def test_the_headline_compares_with_perf_analyzer_in_the_mode_shaped_like_the_client(capsys) -> None:  # noqa: ANN001
    from bench.cli import _headline

    def run(target: str, config: str, level: int, throughput: float, **extra: object) -> dict:
        return {"target": target, "config": config, "mode": "closed", "level": level, "throughput": throughput,
                "p50_ms": 1.0, "client_cores": 0.3, **extra}  # fmt: skip

    runs = [
        run("triton", "default", 1, 1800.0, driver="threads"), run("perf_analyzer", "sync", 1, 2000.0),
        run("triton", "default", 16, 5500.0, driver="coroutines"), run("perf_analyzer", "async", 16, 5000.0),
        run("perf_analyzer", "sync", 16, 4400.0), run("fastapi", "-", 16, 1100.0),
    ]  # fmt: skip
    _headline({"runs": runs})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("c=1: finscore 1,800/s") and "perf_analyzer sync 2,000/s" in lines[0]
    assert lines[0].endswith("throughput -10.0% (its mode shaped like finscore's client)")
    assert "perf_analyzer async 5,000/s" in lines[1] and lines[1].endswith(
        "+10.0% (its mode shaped like finscore's client)"
    )
    assert "perf_analyzer sync 4,400/s" in lines[2] and lines[2].endswith("throughput +25.0%")
    assert lines[3] == "c=16: Triton 5.00x the FastAPI baseline's throughput" and len(lines) == 4
