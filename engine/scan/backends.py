"""Where a scan's batches are scored: in this process, or by a Triton server (shared memory when local).

A backend is described by a small picklable spec (:class:`LocalSpec` or :class:`ServerSpec`) so Dask
workers can open their own; :func:`open_backend` opens one per process and keeps it.

Both backends check rows the same way first: a number column whose text does not parse, or an infinite
value, rejects its row (counted and reported, never scored, never dropped silently).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from engine.bulk import Reject, score_isolating
from kernels import parse_number

__all__ = ["Backend", "LocalSpec", "ServerSpec", "check_rows", "open_backend"]


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
    request_rows: int = 8192


class Backend(Protocol):
    name: str
    version: str
    threshold: float | None
    #: (name, wire datatype) of each model input.
    inputs: list[tuple[str, str]]
    id_column: str | None

    def score(self, frame: pl.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, list[Reject]]:
        """Outputs for the kept rows, the kept row positions within ``frame``, and the rejects."""
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
        flags.append(pl.when(bad).then(pl.lit(name)))
    if not flags:
        return np.ones(frame.height, dtype=bool), []
    first_bad = frame.select(pl.coalesce(flags).alias("bad")).to_series()
    valid = first_bad.is_null().to_numpy()
    rejects = [Reject(int(i), first_bad[int(i)], "not a finite number") for i in np.flatnonzero(~valid)]
    return valid, rejects


class _Local:
    def __init__(self, spec: LocalSpec) -> None:
        from engine.threat import ThreatScorer

        self.scorer = ThreatScorer.load(spec.version_dir, threads=spec.threads)
        self.name = self.scorer.name
        self.version = self.scorer.version
        self.threshold: float | None = self.scorer.threshold
        self.inputs = [(c.name, c.wire) for c in self.scorer.schema.columns]
        self.id_column = self.scorer.schema.id_column

    def score(self, frame: pl.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, list[Reject]]:
        valid, rejects = check_rows(frame, self.inputs)
        kept = np.flatnonzero(valid)
        rows = frame if len(kept) == frame.height else frame[kept]
        return self.scorer.score_frame(rows.select([n for n, _ in self.inputs])), kept, rejects


class _Server:
    def __init__(self, spec: ServerSpec) -> None:
        from clients.shm import bulk_client

        self.spec = spec
        self.client: Any = bulk_client(spec.url, spec.model, shared_memory=spec.shared_memory)
        self.inputs = [(i.name, i.datatype) for i in self.client.inputs]
        self.id_column = self.client.id_column()
        self.name = spec.model
        self.version = self.client.served_version()
        threshold = self.client.parameters().get("threshold")
        self.threshold = float(threshold) if threshold else None

    def _arrays(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for name, wire in self.inputs:
            col = frame.get_column(name)
            if wire == "FP32":
                values = frame.select(parse_number(name)) if col.dtype == pl.String else frame.select(name)
                arrays[name] = values.to_series().cast(pl.Float32).fill_null(float("nan")).to_numpy()
            else:
                arrays[name] = col.cast(pl.String).fill_null("").to_numpy().astype(object)
        return arrays

    def score(self, frame: pl.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, list[Reject]]:
        valid, rejects = check_rows(frame, self.inputs)
        arrays = self._arrays(frame)
        parts: list[dict[str, np.ndarray]] = []
        kept: list[int] = []
        candidates = np.flatnonzero(valid)
        for start in range(0, len(candidates), self.spec.request_rows):
            rows = candidates[start : start + self.spec.request_rows]
            outputs, ok, refused = score_isolating(self.client.infer_arrays, arrays, rows)
            rejects.extend(refused)
            if outputs is not None:
                parts.append(outputs)
                kept.extend(ok)
        if not parts:
            return {}, np.zeros(0, dtype=np.int64), rejects
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return merged, np.asarray(kept, dtype=np.int64), sorted(rejects, key=lambda r: r.row)


@functools.lru_cache(maxsize=4)
def open_backend(spec: LocalSpec | ServerSpec) -> Backend:
    """The backend for ``spec``, opened once per process (Dask workers reuse theirs across units)."""
    if isinstance(spec, LocalSpec):
        if not Path(spec.version_dir).is_dir():
            from engine.errors import ModelNotReadyError

            msg = f"{spec.version_dir}: no such model version folder on this machine"
            raise ModelNotReadyError(msg)
        return _Local(spec)
    return _Server(spec)
