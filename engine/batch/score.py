"""Bulk scoring of a file through the server (or in-process): batches in, one output file, bad rows counted.

Every input row ends up either in the output or in the rejects report (row number, column, reason; never
the raw value). Output is written to a hidden partial file and renamed at the end, so an interrupted run
leaves nothing behind and a rerun produces the same file, never duplicates.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import InvalidInputError
from engine.security.guard import OutputGuard, drop_subject
from engine.security.protect import mask_text
from engine.security.trail import DecisionAudit
from engine.tables.io import iter_batches, require_columns, table_format
from kernels import parse_number

__all__ = [
    "BulkSummary",
    "FrameFn",
    "Reject",
    "ScoreFn",
    "output_frame",
    "score_file",
    "score_file_through",
    "score_isolating",
]

log = logging.getLogger("finscore.bulk")

#: ``arrays shaped [rows, 1] -> outputs by name`` (a served model or an in-process scorer).
ScoreFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
#: ``(ids of the scored rows or None, their input rows, the outputs) -> output frame`` with a ``row`` column.
FrameFn = Callable[[list[object] | None, np.ndarray, dict[str, np.ndarray]], pl.DataFrame]


@dataclass(frozen=True)
class Reject:
    row: int
    column: str
    reason: str


@dataclass
class BulkSummary:
    rows_read: int = 0
    scored: int = 0
    rejected: int = 0
    #: Rows written to the output (one per scored row, or several: a list per row).
    written: int = 0
    #: Scored rows that gave no output row (an empty list).
    empty: int = 0
    out: Path | None = None
    rejects_path: Path | None = None
    seconds: float = 0.0
    rejects: list[Reject] = field(default_factory=list)

    def line(self) -> str:
        rate = self.scored / self.seconds if self.seconds else 0.0
        text = f"read {self.rows_read:,} rows, scored {self.scored:,}, rejected {self.rejected:,} ({rate:,.0f} rows/s)"
        if self.rejected and self.rejects_path:
            text += f"; rejected rows are listed in {self.rejects_path}"
        return text


def _encode(
    batch: pa.RecordBatch, inputs: Sequence[tuple[str, str]], first_row: int
) -> tuple[dict[str, np.ndarray], np.ndarray, list[Reject]]:
    """Arrays for the valid rows, the mask of valid rows, and a Reject for each invalid one."""
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    valid = np.ones(frame.height, dtype=bool)
    rejects: list[Reject] = []
    arrays: dict[str, np.ndarray] = {}
    for name, datatype in inputs:
        col = frame.get_column(name)
        if datatype == "FP32":
            if col.dtype == pl.String:
                parsed = frame.select(parse_number(name)).to_series()
                given = col.is_not_null() & (col.str.strip_chars() != "")
                bad = (given & parsed.is_null()).to_numpy()
                values = parsed.cast(pl.Float32).to_numpy()
            else:
                values = col.cast(pl.Float32).to_numpy()
                bad = np.zeros(frame.height, dtype=bool)
            with np.errstate(invalid="ignore"):
                inf = np.isinf(values)
            for i in np.flatnonzero((bad | inf) & valid):
                rejects.append(Reject(first_row + int(i), name, "not a finite number"))
            valid &= ~(bad | inf)
            arrays[name] = np.nan_to_num(values, nan=np.nan, posinf=np.nan, neginf=np.nan).astype(np.float32)
        else:
            text = col.cast(pl.String).fill_null("").to_list()
            arrays[name] = np.array([t.encode("utf-8") for t in text], dtype=object)
    return arrays, valid, rejects


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def score_isolating(
    score: ScoreFn, arrays: dict[str, np.ndarray], rows: np.ndarray
) -> tuple[dict[str, np.ndarray] | None, list[int], list[Reject]]:
    """Score rows; if the model rejects the chunk, bisect to find the rows it rejects."""
    try:
        return score({k: v[rows] if v.ndim > 1 else v[rows].reshape(-1, 1) for k, v in arrays.items()}), list(rows), []
    except InvalidInputError as exc:
        if len(rows) == 1:
            return None, [], [Reject(int(rows[0]), "", str(exc))]
    mid = len(rows) // 2
    left, lrows, lrej = score_isolating(score, arrays, rows[:mid])
    right, rrows, rrej = score_isolating(score, arrays, rows[mid:])
    parts = [p for p in (left, right) if p is not None]
    if not parts:
        return None, [], lrej + rrej
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return merged, lrows + rrows, lrej + rrej


def output_frame(ids: list[object] | None, rows: np.ndarray, outputs: dict[str, np.ndarray]) -> pl.DataFrame:
    """One output row per scored row: ``row``, ``id`` when given, then each output (``name_1..n`` when wider)."""
    cols: dict[str, object] = {"row": rows.astype(np.int64)}
    if ids is not None:
        cols["id"] = ids
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if arr.ndim == 2 and arr.shape[1] > 1:
            stem = name[:-1] if name.endswith("s") else name
            for j in range(arr.shape[1]):
                cols[f"{stem}_{j + 1}"] = [_text(v) for v in arr[:, j]]
        else:
            flat = arr.reshape(len(rows))
            cols[name] = [_text(v) for v in flat] if flat.dtype == object else flat
    return pl.DataFrame(cols)


def _text(v: object) -> object:
    return v.decode("utf-8") if isinstance(v, bytes) else v


class _Writer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = table_format(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = path.with_name(f".{path.name}.partial")
        self._pq: pq.ParquetWriter | None = None
        self._csv_started = False

    def write(self, frame: pl.DataFrame) -> None:
        if self.format == "parquet":
            table = frame.to_arrow()
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.partial, table.schema)
            self._pq.write_table(table)
        else:
            with self.partial.open("a" if self._csv_started else "w", encoding="utf-8") as fh:
                frame.write_csv(fh, include_header=not self._csv_started)
            self._csv_started = True

    def close(self, empty_schema: pl.DataFrame) -> None:
        if self.format == "parquet":
            if self._pq is None:
                empty_schema.write_parquet(self.partial)
            else:
                self._pq.close()
        elif not self._csv_started:
            empty_schema.write_csv(self.partial)
        self.partial.replace(self.path)

    def abort(self) -> None:
        if self._pq is not None:
            self._pq.close()
        self.partial.unlink(missing_ok=True)


def score_file(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    score: ScoreFn,
    inputs: Sequence[tuple[str, str]],
    optional: Sequence[tuple[str, str]] = (),
    id_column: str | None = None,
    request_rows: int = 1024,
    progress: bool = True,
    guard: OutputGuard | None = None,
    audit: DecisionAudit | None = None,
    frame: FrameFn = output_frame,
    written: Sequence[str] | None = None,
    max_row_bytes: int | None = None,
) -> BulkSummary:
    """Score every row of ``data`` with ``score`` and write ``out`` (CSV or Parquet).

    ``inputs`` are the model's ``(name, datatype)`` pairs the file must have, ``optional`` those sent when
    the file has them; ``id_column`` is carried to the output (as ``id``) when the file has it. Rows that
    cannot be scored are counted and listed in ``<out>.rejected.csv``. ``guard`` treats every output part
    before it is written (card numbers in ``id`` are masked even without one); ``audit`` records each
    decision written and, at the end, whether the output was. ``frame`` makes the output rows of a request's
    outputs (:func:`output_frame`: one per scored row); ``written`` names the columns written, when not all.
    A CSV row longer than ``max_row_bytes`` (default: the setting) is rejected by its size, unread.
    """
    guard = guard or OutputGuard.build(("id",))
    started = time.perf_counter()
    out_path = Path(out)
    summary = BulkSummary(out=out_path)
    names = [n for n, _ in inputs]
    sent = list(inputs)
    writer = _Writer(out_path)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit=" rows", desc="scoring", leave=False)

    def too_long(row: int, reason: str) -> None:
        # Between two batches: the rows after it keep their numbers, and it is counted as read.
        summary.rejects.append(Reject(row, "", reason))
        summary.rows_read += 1

    try:
        checked = False
        for batch in iter_batches(data, max_row_bytes=max_row_bytes, on_reject=too_long):
            if not checked:
                require_columns(batch.schema.names, names, source=str(data))
                sent += [(n, t) for n, t in optional if n in batch.schema.names and n not in names]
                if id_column and id_column not in batch.schema.names:
                    id_column = None
                checked = True
            first = summary.rows_read
            summary.rows_read += batch.num_rows
            arrays, valid, rejects = _encode(batch, sent, first)
            summary.rejects.extend(rejects)
            ids = batch.column(id_column).to_pylist() if id_column else None
            valid_rows = np.flatnonzero(valid)
            for part in _chunks(len(valid_rows), request_rows):
                rows = valid_rows[part]
                outputs, kept, server_rejects = score_isolating(score, arrays, rows)
                for r in server_rejects:
                    summary.rejects.append(Reject(first + r.row, r.column, r.reason))
                if outputs is not None:
                    kept_rows = np.asarray(kept)
                    rows_out = guard.apply(
                        frame([ids[i] for i in kept_rows] if ids is not None else None, first + kept_rows, outputs)
                    )
                    writer.write(_written(rows_out, written))
                    if audit is not None:
                        audit.record(rows_out)
                    summary.scored += len(kept_rows)
                    summary.written += rows_out.height
                    summary.empty += len(kept_rows) - rows_out.get_column("row").n_unique()
            if bar is not None:
                bar.update(batch.num_rows)
        if not summary.rows_read:
            msg = f"{data}: the table has no rows"
            raise InvalidInputError(msg)
        if audit is not None:
            audit.flush()  # every decision is on record before the output appears
    except BaseException:
        writer.abort()
        if audit is not None:
            _close_failed(audit, summary)
        raise
    finally:
        if bar is not None:
            bar.close()
    writer.close(_written(frame(None, np.empty(0, dtype=np.int64), {}), written))
    summary.rejected = len(summary.rejects)
    if audit is not None:
        audit.close("written", rows=summary.rows_read, scored=summary.scored, rejected=summary.rejected)
    rejects_path = out_path.with_name(out_path.stem + ".rejected.csv")
    if summary.rejects:
        with rejects_path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["row", "column", "reason"])
            w.writerows((r.row, r.column, mask_text(r.reason)) for r in summary.rejects)
        summary.rejects_path = rejects_path
    else:
        rejects_path.unlink(missing_ok=True)
    summary.seconds = time.perf_counter() - started
    return summary


def _written(frame: pl.DataFrame, columns: Sequence[str] | None) -> pl.DataFrame:
    """What of an output part is written: ``columns``, or all but the audit's subject column."""
    return frame.select(columns) if columns is not None else drop_subject(frame)


def _close_failed(audit: DecisionAudit, summary: BulkSummary) -> None:
    try:
        audit.close("failed", rows=summary.rows_read, scored=summary.scored)
    except Exception:  # the error on its way out says more than a second one about the log
        log.exception("could not record the failed run in the audit log")


def score_file_through(
    client: Any,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    request_rows: int = 1024,
    progress: bool = True,
    guard: OutputGuard | None = None,
    audit: DecisionAudit | None = None,
    max_row_bytes: int | None = None,
) -> BulkSummary:
    """:func:`score_file` through a served model: its inputs from the model's metadata, its id column from
    the model's config (``client`` is a :class:`clients.ModelClient`)."""
    return score_file(
        data,
        out,
        score=client.infer_arrays,
        inputs=[(i.name, i.datatype) for i in client.inputs],
        id_column=client.id_column(),
        request_rows=request_rows,
        progress=progress,
        guard=guard,
        audit=audit,
        max_row_bytes=max_row_bytes,
    )
