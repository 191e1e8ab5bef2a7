"""What the load generator sends requests to, and the requests themselves.

- :class:`TritonTarget`: a served model over gRPC. Each request is serialised once into a
  ``ModelInferRequest`` and sent with gRPC's own stub (``grpc.aio`` in closed loops), so the Python client
  costs little and the figures can be set beside perf_analyzer's.
- :class:`HttpTarget`: the same rows as JSON to the FastAPI baseline (:mod:`bench.fastapi_app`), one
  keep-alive connection per worker (asyncio streams in closed loops).
- :class:`InProcessTarget`: the model's scorer called in this process (no transport at all).

:func:`request_pool` makes the rows: from a data file when one is given, else from the model's metadata
(numbers drawn at random, text as tokens the model has not seen: both are valid requests, as
perf_analyzer's random data is).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor, triton_to_np_dtype

from engine.errors import InvalidInputError

__all__ = ["HttpTarget", "InProcessTarget", "TritonTarget", "request_pool", "scorer_class"]

#: The scorer each served model runs (what its ``model_repo/<model>/model.py`` shell names).
SCORERS = {
    "churn": "engine.families.churn:ChurnScorer",
    "threat": "engine.families.threat:ThreatScorer",
    "threat_features": "engine.families.threat.matrix:ThreatMatrixScorer",
    "recommender": "engine.families.recommender:RecommenderScorer",
    "assistant": "engine.families.assistant:AssistantScorer",
    "propensity": "engine.families.propensity:PropensityScorer",
    "segments": "engine.families.segments:SegmentScorer",
}
Arrays = dict[str, np.ndarray]
_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: ``coroutines_from`` of a target that closed loops always drive with threads.
_NEVER = 1 << 30


def scorer_class(model: str) -> Any:
    """The scorer class of ``model``, for in-process and FastAPI baselines."""
    if model not in SCORERS:
        msg = f"no in-process scorer is known for model {model!r}; known: {', '.join(sorted(SCORERS))}"
        raise InvalidInputError(msg)
    module, name = SCORERS[model].split(":")
    return getattr(importlib.import_module(module), name)


def _random_column(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([f"v{k}".encode() for k in rng.integers(0, 8, size=int(np.prod(shape)))], dtype=object).reshape(
            shape
        )
    dtype = triton_to_np_dtype(datatype)
    if dtype is None or dtype is object:
        msg = f"cannot generate data for datatype {datatype}"
        raise InvalidInputError(msg)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    return np.abs(rng.normal(10.0, 5.0, size=shape)).astype(dtype)


def request_pool(
    inputs: Sequence[Any],
    *,
    rows: int = 256,
    data: str | Path | None = None,
    model: str = "",
    seed: int = 0,
    optional: Collection[str] = (),
) -> Arrays:
    """``rows`` rows of every input, shaped ``[rows, *dims]``: from ``data`` (a CSV or Parquet file with the
    model's columns) when given, else random values of each input's datatype. The ``optional`` inputs are sent
    only when ``data`` has their column (a request without them is what most clients send).

    ``inputs`` are the model's metadata tensors (``name``, ``datatype``, ``shape`` with -1 first).
    """
    if data is not None:
        from clients.tensors import InputSpec, encode_inputs
        from engine.tables.io import read_table

        frame = read_table(data)
        if frame.height == 0:
            msg = f"{data} has no rows to send"
            raise InvalidInputError(msg)
        frame = frame.sample(rows, with_replacement=frame.height < rows, seed=seed)
        specs = [InputSpec(t.name, t.datatype, optional=t.name in optional) for t in inputs]
        return encode_inputs(frame, specs, model=model)
    rng = np.random.default_rng(seed)
    shapes = {t.name: (rows, *(int(d) for d in list(t.shape)[1:])) for t in inputs if t.name not in optional}
    return {t.name: _random_column(t.datatype, shapes[t.name], rng) for t in inputs if t.name in shapes}


def _take(pool: Arrays, i: int, batch: int) -> Arrays:
    n = len(next(iter(pool.values())))
    idx = (np.arange(batch) + i * batch) % n
    return {name: arr[idx] for name, arr in pool.items()}


def _slices(pool: Arrays, batch: int, count: int) -> list[Arrays]:
    return [_take(pool, i, batch) for i in range(count)]


def _infer_request(model: str, arrays: Arrays, datatypes: dict[str, str], outputs: Sequence[str]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, arr in arrays.items():
        # The tensor's bytes travel in raw_input_contents, in the same order as the inputs.
        request.inputs.add(name=name, datatype=datatypes[name], shape=list(arr.shape))
        if datatypes[name] == "BYTES":
            serialized = serialize_byte_tensor(arr)  # as tritonclient's InferInput does it
            request.raw_input_contents.append(serialized.item() if serialized.size else b"")
        else:
            request.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


class TritonTarget:
    """A served model over gRPC; ``requests`` distinct ready-made requests of ``batch`` rows cycled through.

    Workers share one gRPC channel (HTTP/2 multiplexes their calls), as perf_analyzer's threads share a client.
    ``client="tritonclient"`` sends through ``tritonclient.grpc.InferenceServerClient.infer`` instead (one client
    per worker), to measure what an application using the Python client sees.
    """

    def __init__(
        self, url: str, model: str, pool: Arrays, metadata: Any, *, batch: int = 1, requests: int = 64,
        timeout: float = 60.0, client: str = "stub", tls: Any = None,
    ) -> None:  # fmt: skip
        if client not in ("stub", "tritonclient"):
            msg = f"the gRPC client is 'stub' or 'tritonclient', not {client!r}"
            raise InvalidInputError(msg)
        self.name = "triton"  # the figures' settings say which client
        self.url, self.model, self.client = url, model, client
        self.batch = batch
        self.timeout = timeout
        datatypes = {t.name: t.datatype for t in metadata.inputs}
        outputs = [t.name for t in metadata.outputs]
        self.arrays = _slices(pool, batch, requests)
        self.io = (datatypes, outputs)
        self.requests = [_infer_request(model, a, datatypes, outputs).SerializeToString() for a in self.arrays]
        self.clients: list[Any] = []
        self.tls = tls  # clients.Tls, or None for plaintext
        # Closed loops drive the stub from one event loop from 2 workers up. One worker is cheaper blocking:
        # grpc.aio hands each answer from its poller thread to the loop (client CPU per call at concurrency 1:
        # blocking 105 µs, grpc.aio 145 µs; at 16: blocking 100-135 µs, grpc.aio 60 µs).
        self.coroutines_from = 2 if client == "stub" else _NEVER
        self.channel = self._channel(grpc)
        # Bytes in, bytes out: the requests are serialised once, and the answers' tensors are not needed.
        self.infer = self.channel.unary_unary(_MODEL_INFER)

    def _channel(self, module: Any) -> Any:
        """A channel to the server from ``grpc`` or ``grpc.aio`` (the same calls make either)."""
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        if self.tls is None:
            return module.insecure_channel(self.url, options=options)
        read = lambda p: p.read_bytes() if p else None  # noqa: E731
        creds = grpc.ssl_channel_credentials(read(self.tls.ca), read(self.tls.key), read(self.tls.cert))
        return module.secure_channel(self.url, creds, options=options)

    @asynccontextmanager
    async def async_workers(self, n: int) -> AsyncIterator[list[Callable[[int], Awaitable[None]]]]:
        """``n`` workers on one ``grpc.aio`` channel (HTTP/2 multiplexes their calls), opened in the running loop."""
        channel = self._channel(grpc.aio)
        infer, requests, timeout = channel.unary_unary(_MODEL_INFER), self.requests, self.timeout

        async def call(i: int) -> None:
            await infer(requests[i % len(requests)], timeout=timeout)  # grpc.aio.AioRpcError on an error answer

        try:
            yield [call] * n
        finally:
            await channel.close()

    def worker(self) -> Callable[[int], None]:
        if self.client == "tritonclient":
            return self._tritonclient_worker()
        infer, requests, timeout = self.infer, self.requests, self.timeout

        def call(i: int) -> None:
            infer(requests[i % len(requests)], timeout=timeout)  # grpc.RpcError on an error answer

        return call

    def _tritonclient_worker(self) -> Callable[[int], None]:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url=self.url, **(self.tls.client_kwargs() if self.tls else {}))
        self.clients.append(client)
        datatypes, outputs = self.io
        prepared = []
        for arrays in self.arrays:
            inputs = []
            for name, arr in arrays.items():
                tensor = grpcclient.InferInput(name, list(arr.shape), datatypes[name])
                tensor.set_data_from_numpy(arr)
                inputs.append(tensor)
            prepared.append((inputs, [grpcclient.InferRequestedOutput(n) for n in outputs]))
        model, timeout = self.model, self.timeout

        def call(i: int) -> None:
            inputs, wanted = prepared[i % len(prepared)]
            client.infer(model, inputs, outputs=wanted, client_timeout=timeout)

        return call

    def close(self) -> None:
        self.channel.close()
        for client in self.clients:
            client.close()


def _json_rows(arrays: Arrays) -> bytes:
    """``{"inputs": {name: [values...]}}`` with text decoded: the body a JSON service receives."""
    columns = {}
    for name, arr in arrays.items():
        flat = arr.reshape(len(arr), -1)
        if arr.dtype == object:
            values = [[v.decode("utf-8") if isinstance(v, bytes) else v for v in row] for row in flat]
        else:
            values = np.where(np.isnan(flat), None, flat).tolist() if flat.dtype.kind == "f" else flat.tolist()
        columns[name] = [row[0] for row in values] if flat.shape[1] == 1 else values
    return json.dumps({"inputs": columns}).encode("utf-8")


class HttpTarget:
    """The FastAPI baseline: ``POST /score`` with the rows as JSON, one keep-alive connection per worker."""

    #: asyncio streams cost less than http.client at any concurrency (client CPU per call at 1: 54 vs 121 µs).
    coroutines_from = 1

    def __init__(self, host: str, port: int, pool: Arrays, *, batch: int = 1, requests: int = 64) -> None:
        self.name = "fastapi"
        self.host, self.port = host, port
        self.batch = batch
        self.bodies = [_json_rows(a) for a in _slices(pool, batch, requests)]
        self.connections: list[http.client.HTTPConnection] = []
        head = f"POST /score HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        self.messages = [f"{head}Content-Length: {len(b)}\r\n\r\n".encode("ascii") + b for b in self.bodies]

    @asynccontextmanager
    async def async_workers(self, n: int) -> AsyncIterator[list[Callable[[int], Awaitable[None]]]]:
        """``n`` workers, each with its own keep-alive connection (asyncio streams), opened on first use."""
        connections = [_AsyncConnection(self.host, self.port) for _ in range(n)]
        messages = self.messages

        def worker(conn: _AsyncConnection) -> Callable[[int], Awaitable[None]]:
            async def call(i: int) -> None:
                await conn.exchange(messages[i % len(messages)])

            return call

        try:
            yield [worker(c) for c in connections]
        finally:
            await asyncio.gather(*(conn.aclose() for conn in connections))

    def worker(self) -> Callable[[int], None]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.connections.append(conn)
        bodies, headers = self.bodies, {"Content-Type": "application/json"}

        def call(i: int) -> None:
            conn.request("POST", "/score", body=bodies[i % len(bodies)], headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:200].decode('utf-8', 'replace')}")

        return call

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


class _AsyncConnection:
    """One HTTP/1.1 keep-alive connection over asyncio streams: send a whole request, read the answer by its
    Content-Length. Any fault closes it, and the next exchange connects again."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, message: bytes) -> None:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        try:
            writer.write(message)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length = _status_and_length(head)
            body = await reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None

    async def aclose(self) -> None:
        if self.streams is not None:
            writer = self.streams[1]
            self.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _status_and_length(head: bytes) -> tuple[int, int]:
    """The status code and Content-Length of an HTTP/1.1 answer's head (the baseline never sends it chunked)."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value)
    msg = f"HTTP {status} answer without a Content-Length: {lines[0][:100].decode('latin-1')}"
    raise RuntimeError(msg)


class InProcessTarget:
    """The scorer of a version folder, called in this process: the floor under any transport."""

    def __init__(
        self, model: str, version_dir: str | Path, pool: Arrays, *, batch: int = 1, requests: int = 64
    ) -> None:
        self.name = "in-process"
        self.batch = batch
        self.scorer = scorer_class(model).load(version_dir)
        self.requests = _slices(pool, batch, requests)

    def worker(self) -> Callable[[int], None]:
        validate, score, requests = self.scorer.validate, self.scorer.score_rows, self.requests

        def call(i: int) -> None:
            score(validate(requests[i % len(requests)]))

        return call

    def close(self) -> None:
        pass
