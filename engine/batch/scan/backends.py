"""Where a scan's batches are scored: in this process, or by a Triton server (shared memory when local).

A backend is described by a small picklable spec (:class:`LocalSpec` or :class:`ServerSpec`) so Dask
workers can open their own; :func:`open_backend` opens one per process and keeps it.

Both backends check rows the same way first: a number column whose text does not parse, or an infinite
value, rejects its row (counted and reported, never scored, never dropped silently).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from engine.batch.score import Reject, score_isolating
from engine.errors import InvalidInputError
from engine.families.threat.scorer import N_TOP
from kernels import parse_number

if TYPE_CHECKING:
    from clients.tls import Tls

__all__ = ["Backend", "LocalSpec", "ServerSpec", "check_rows", "close_backends", "open_backend"]


@dataclass(frozen=True)
class LocalSpec:
    """Score in-process with a trained version folder."""

    version_dir: str
    threads: int = 1


@dataclass(frozen=True)
class ServerSpec:
    """Score through a served model."""

    url: str
    model: str = "threat"
    shared_memory: bool | None = None
    #: Rows per request; None: as many as the served model takes at once (its max batch size).
    request_rows: int | None = None
    #: Requests outstanding at once (each with its own client and shared-memory regions).
    in_flight: int = 2
    #: Send feature matrices to the ``<model>_features`` twin (None: when the server has it loaded).
    matrix: bool | None = None
    #: gRPC over TLS (None: plaintext).
    tls: Tls | None = None


class Backend(Protocol):
    name: str
    version: str
    threshold: float | None
    #: (name, wire datatype) of each model input.
    inputs: list[tuple[str, str]]
    id_column: str | None

    def score(self, frame: pl.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, list[Reject]]:
        """Outputs for the kept rows, the kept row positions within ``frame``, and the rejects.

        ``anomaly_score`` and ``is_threat`` have a row per kept row; ``top_features`` (names, str or bytes)
        only per row that alerts, in order: reasons are what alerts carry, and the other rows need none."""
        ...


def check_rows(frame: pl.DataFrame, inputs: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[Reject]]:
    """The mask of rows every number input can be read from, and a :class:`Reject` (row position, first bad
    column) for each other row."""
    flags = []
    for name, wire in inputs:
        if wire != "FP32":
            continue
        col = pl.col(name)
        if frame.schema[name] == pl.String:
            given = col.is_not_null() & (col.str.strip_chars() != "")
            parsed = parse_number(name)
            bad = given & (parsed.is_null() | parsed.is_infinite())
        elif frame.schema[name].is_numeric():
            bad = col.cast(pl.Float64).is_infinite().fill_null(False)
        else:
            bad = col.is_not_null()  # a number column that holds something else (a list, a date)
        flags.append((name, bad))
    # Nearly every batch is clean: one aggregate per column says so without a text column of row verdicts.
    if not flags or not any(frame.select(bad.any().alias(name) for name, bad in flags).row(0)):
        return np.ones(frame.height, dtype=bool), []
    first_bad = frame.select(
        pl.coalesce(pl.when(bad).then(pl.lit(name)) for name, bad in flags).alias("bad")
    ).to_series()
    valid = first_bad.is_null().to_numpy()
    rejects = [Reject(int(i), first_bad[int(i)], "not a finite number") for i in np.flatnonzero(~valid)]
    return valid, rejects


class _Local:
    def __init__(self, spec: LocalSpec) -> None:
        from engine.families.threat import ThreatScorer

        self.scorer = ThreatScorer.load(spec.version_dir, threads=spec.threads)
        self.name = self.scorer.name
        self.version = self.scorer.version
        self.threshold: float | None = self.scorer.threshold
        self.inputs: list[tuple[str, str]] = [(c.name, c.wire) for c in self.scorer.schema.columns]
        self.id_column = self.scorer.schema.id_column

    def score(self, frame: pl.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, list[Reject]]:
        valid, rejects = check_rows(frame, self.inputs)
        kept = np.flatnonzero(valid)
        rows = frame if len(kept) == frame.height else frame[kept]
        # Alerts need reasons; the other rows do not.
        outputs = self.scorer.score_frame(rows.select([n for n, _ in self.inputs]), explain="threats")
        return outputs, kept, rejects


class _Server:
    """Requests of ``request_rows`` rows, ``in_flight`` at a time (one client each), so this process prepares
    the next request while the server scores the last."""

    MODE = ""
    #: (name, wire datatype) of each model input; set by the subclass from the server's metadata.
    inputs: list[tuple[str, str]]
    id_column: str | None

    def __init__(self, spec: ServerSpec, model: str) -> None:
        from clients.shm import bulk_client

        self.spec = spec
        self.name = spec.model
        self.clients: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.client = bulk_client(spec.url, model, shared_memory=spec.shared_memory, tls=spec.tls)
        try:
            self.request_rows = _request_rows(spec.request_rows, self.client.max_batch_size(), model)
        except BaseException:
            self.client.close()
            raise
        self.clients.put(self.client)
        for _ in range(spec.in_flight - 1):
            self.clients.put(bulk_client(spec.url, model, shared_memory=spec.shared_memory, tls=spec.tls))
        self.pool = ThreadPoolExecutor(max_workers=spec.in_flight, thread_name_prefix="finscore-scan")
        self.parameters = self.client.parameters()
        self.version = self.client.served_version()
        self.threshold = float(self.parameters["threshold"]) if self.parameters.get("threshold") else None

    @property
    def transport(self) -> str:
        return f"{type(self.client).__name__}, {self.MODE}"

    def prepare(self, frame: pl.DataFrame, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The request arrays of ``frame``'s ``rows`` (positions), one entry per row."""
        raise NotImplementedError

    def infer(self, client: Any, part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _request(
        self, arrays: dict[str, np.ndarray], rows: np.ndarray
    ) -> tuple[Any, np.ndarray | list[int], list[Reject]]:
        """Score ``rows`` (consecutive positions) in one request, sent as views of ``arrays``; only a request
        the model refuses is cut down to find the rows it refuses (:func:`score_isolating`)."""
        client = self.clients.get()
        try:
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            try:
                part = {k: v[lo:hi] if v.ndim > 1 else v[lo:hi].reshape(-1, 1) for k, v in arrays.items()}
                return self.infer(client, part), rows, []
            except InvalidInputError:
                return score_isolating(lambda part: self.infer(client, part), arrays, rows)
        finally:
            self.clients.put(client)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        while not self.clients.empty():
            self.clients.get().close()

    def score(self, frame: pl.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, list[Reject]]:
        valid, rejects = check_rows(frame, self.inputs)
        candidates = np.flatnonzero(valid)
        arrays = self.prepare(frame, candidates)
        # Positions into ``arrays`` (and so into ``candidates``), request by request.
        size = self.request_rows
        chunks = [np.arange(i, min(i + size, len(candidates))) for i in range(0, len(candidates), size)]
        parts: list[dict[str, np.ndarray]] = []
        kept: list[np.ndarray] = []
        for outputs, ok, refused in self.pool.map(lambda rows: self._request(arrays, rows), chunks):
            rejects.extend(Reject(int(candidates[r.row]), r.column, r.reason) for r in refused)
            if outputs is not None:
                parts.append(outputs)
                kept.append(np.asarray(ok, dtype=np.int64))
        if not parts:
            return {}, np.zeros(0, dtype=np.int64), rejects
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return merged, candidates[np.concatenate(kept)], sorted(rejects, key=lambda r: r.row)


#: Rows per request for a model that does not say how many it takes at once.
_FALLBACK_ROWS = 8192


def _request_rows(asked: int | None, most: int, model: str) -> int:
    """Rows per request: ``asked``, or the most ``model`` takes at once (``most``, its max batch size; 0 when it
    does not say). Fewer, larger requests cost the server less: a scan of 1M events over shared memory took
    475 ms in requests of 32,768 rows against 520 ms in requests of 8,192 (2 cores)."""
    if asked is None:
        return most or _FALLBACK_ROWS
    if asked < 1 or (most and asked > most):
        limit = f"1 to {most}, its max batch size" if most else "at least 1"
        msg = f"{asked} rows per request (--request-rows) is not what model {model!r} takes: {limit}"
        raise InvalidInputError(msg)
    return asked


class _RawServer(_Server):
    """The served model itself, one input per raw column; reasons are fetched only for rows that alert."""

    SCORES = ("anomaly_score", "is_threat")
    MODE = "raw columns"

    def __init__(self, spec: ServerSpec) -> None:
        super().__init__(spec, spec.model)
        self.inputs = [(i.name, i.datatype) for i in self.client.inputs]
        self.id_column = self.client.id_column()
        self.explains = "top_features" in self.client.outputs

    def prepare(self, frame: pl.DataFrame, rows: np.ndarray) -> dict[str, np.ndarray]:
        frame = frame[rows]
        arrays: dict[str, np.ndarray] = {}
        for name, wire in self.inputs:
            col = frame.get_column(name)
            if wire == "FP32":
                values = frame.select(parse_number(name)) if col.dtype == pl.String else frame.select(name)
                arrays[name] = values.to_series().cast(pl.Float32).fill_null(float("nan")).to_numpy()
            else:
                arrays[name] = col.cast(pl.String).fill_null("").to_numpy().astype(object)
        return arrays

    def infer(self, client: Any, part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scores = client.infer_arrays(part, outputs=self.SCORES)
        flagged = np.flatnonzero(np.asarray(scores["is_threat"]).ravel())
        top = np.full((len(flagged), N_TOP), b"", dtype=object)
        if self.explains and len(flagged):
            asked = {k: v[flagged] for k, v in part.items()}
            top[:] = client.infer_arrays(asked, outputs=["top_features"])["top_features"]
        scores["top_features"] = top
        return scores


class _MatrixServer(_Server):
    """The model's ``<name>_features`` twin: features computed here with the scaling the server publishes,
    sent as one FP32 matrix per request; every output has a fixed size, so all of it rides shared memory."""

    MODE = "feature matrices"

    def __init__(self, spec: ServerSpec) -> None:
        from engine.families.threat.matrix import MATRIX_INPUT, SUFFIX, features_from_parameters

        super().__init__(spec, spec.model + SUFFIX)
        self.features = features_from_parameters(self.parameters)
        schema = self.features.schema
        self.inputs = [(c.name, c.wire) for c in schema.columns]
        self.id_column = schema.id_column
        self.key = MATRIX_INPUT
        self._names = np.asarray([*schema.names, ""], dtype=object)  # index -1: no column

    def prepare(self, frame: pl.DataFrame, rows: np.ndarray) -> dict[str, np.ndarray]:
        picked = frame if len(rows) == frame.height else frame[rows]
        return {self.key: self.features.matrix(picked.select([n for n, _ in self.inputs]))}

    def infer(self, client: Any, part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = client.infer_arrays(part)
        top = np.asarray(out.pop("top_columns"))
        out["top_features"] = self._names[top[np.asarray(out["is_threat"]).ravel()]]
        return out


def _served(spec: ServerSpec) -> _Server:
    if spec.matrix is not False:
        from clients import ModelClient
        from engine.families.threat.matrix import SUFFIX

        with ModelClient(spec.url, spec.model + SUFFIX, tls=spec.tls) as probe:
            ready = probe.is_ready()
        if ready:
            return _MatrixServer(spec)
        if spec.matrix:
            from engine.errors import ModelNotReadyError

            msg = f"model {spec.model + SUFFIX!r} is not loaded on {spec.url}: retrain {spec.model} or drop --matrix"
            raise ModelNotReadyError(msg)
    return _RawServer(spec)


_OPEN: dict[LocalSpec | ServerSpec, Backend] = {}
_OPENING = threading.Lock()


def open_backend(spec: LocalSpec | ServerSpec) -> Backend:
    """The backend for ``spec``, opened once per process (Dask workers reuse theirs across units)."""
    with _OPENING:
        if spec not in _OPEN:
            if isinstance(spec, LocalSpec):
                if not Path(spec.version_dir).is_dir():
                    from engine.errors import ModelNotReadyError

                    msg = f"{spec.version_dir}: no such model version folder on this machine"
                    raise ModelNotReadyError(msg)
                _OPEN[spec] = _Local(spec)
            else:
                _OPEN[spec] = _served(spec)
        return _OPEN[spec]


def close_backends() -> None:
    """Close what :func:`open_backend` opened in this process (server clients and their shared memory)."""
    with _OPENING:
        for backend in _OPEN.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        _OPEN.clear()
