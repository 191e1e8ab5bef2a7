"""Alerts: the rows a scan flags, kept as typed frames, written as Elastic Common Schema JSON lines or Parquet.

An alert names where its row came from (file and row number, the id column's value when the model has one,
and the source IP and window of an auth-log window) and why (score, threshold, the three columns with the
largest reconstruction error). Raw column values are never copied into alerts.

ECS fields used: ``@timestamp``, ``event.kind`` = ``alert``, ``event.category`` = ``intrusion_detection``,
``event.module``, ``event.dataset``, ``event.risk_score``, ``event.start`` (window start), ``rule.name``,
``rule.version``, ``log.file.path``, ``source.ip``, ``user.name``; finscore's own fields sit under ``finscore.*``, as
ECS asks of custom fields.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl

__all__ = ["ALERT_SCHEMA", "ENTITY_COLUMNS", "AlertFormat", "alert_frame"]

_COPY_CHUNK = 1 << 20

#: The columns of an auth-log window that say what it is about (carried into alerts, never scored).
ENTITY_COLUMNS = ("source_ip", "user", "window_start")

ALERT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "file": pl.String,
    "row": pl.Int64,
    "record_id": pl.String,
    "source_ip": pl.String,
    "user_name": pl.String,
    "window_start": pl.Datetime("us"),
    "anomaly_score": pl.Float32,
    "top_features": pl.List(pl.String),
}


def _reasons(top: np.ndarray) -> pl.Series:
    """``[rows, k]`` names (str, or bytes from the server) as a list column without the empty slots."""
    nested = pl.Series(top.ravel()).cast(pl.String).reshape(top.shape).arr.to_list()
    return nested.list.eval(pl.element().filter(pl.element() != ""))


def alert_frame(
    frame: pl.DataFrame,
    kept: np.ndarray,
    outputs: dict[str, np.ndarray],
    *,
    file: str,
    first_row: int,
    id_column: str | None,
) -> pl.DataFrame:
    """The alerts among one scored batch: ``kept`` are the scored rows' positions in ``frame``; ``outputs``
    hold ``anomaly_score`` and ``is_threat`` per kept row, ``top_features`` per alerting row."""
    if not len(kept):
        return pl.DataFrame(schema=ALERT_SCHEMA)
    flagged = np.asarray(outputs["is_threat"]).reshape(len(kept)).astype(bool)
    rows = kept[flagged]
    if not len(rows):
        return pl.DataFrame(schema=ALERT_SCHEMA)
    top = np.asarray(outputs["top_features"]).reshape(len(rows), -1)  # the alerting rows' only
    scores = np.asarray(outputs["anomaly_score"], dtype=np.float32).reshape(len(kept))[flagged]
    carried = [c for c in dict.fromkeys((id_column, *ENTITY_COLUMNS)) if c and c in frame.columns]
    picked = frame.select(carried)[rows]

    def column(name: str | None, dtype: pl.DataType) -> pl.Series:
        if name and name in picked.columns:
            return picked.get_column(name).cast(dtype)
        return pl.Series([None] * len(rows), dtype=dtype)

    return pl.DataFrame(
        {
            "file": [file] * len(rows),
            "row": (first_row + rows).astype(np.int64),
            "record_id": column(id_column, pl.String()),
            "source_ip": column("source_ip", pl.String()),
            "user_name": column("user", pl.String()),
            "window_start": column("window_start", pl.Datetime("us")),
            "anomaly_score": scores,
            "top_features": _reasons(top),
        },
        schema=ALERT_SCHEMA,
    )


def _json(name: str) -> pl.Expr:
    """Column ``name``'s values as JSON text: strings quoted and escaped, lists as arrays, null as ``null``."""
    return pl.struct(pl.col(name).alias("v")).struct.json_encode().str.slice(len('{"v":')).str.strip_suffix("}")


def _ecs_lines(
    alerts: pl.DataFrame, *, model: str, version: str, threshold: float | None, timestamp: str
) -> pl.DataFrame:
    """One ECS JSON line per alert (column ``line``). What every alert of a scan shares is encoded once, in
    Python; Polars fills in each alert's own values, already JSON-encoded: a line is a concatenation."""

    def constant(text: str) -> pl.Expr:
        return pl.lit(text, dtype=pl.String)

    def compact(value: object) -> str:
        return json.dumps(value, separators=(",", ":"))

    def optional(present: str, text: str, value: pl.Expr, close: str) -> pl.Expr:
        """A member written only where the alert has a value (most scans' alerts have none or all)."""
        missing = alerts.get_column(present).null_count()
        if missing == alerts.height:
            return constant("")
        member = pl.concat_str(constant(text), value, constant(close))
        return member if not missing else pl.when(pl.col(present).is_not_null()).then(member).otherwise(constant(""))

    score = pl.col("anomaly_score").cast(pl.Float64).cast(pl.String)
    window = pl.col("window_start").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    rule = {"name": f"finscore {model} autoencoder", "version": version}
    parts = [
        constant(
            f'{{"@timestamp":{compact(timestamp)},"event":{{"kind":"alert","category":["intrusion_detection"],'
            f'"type":["info"],"module":"finscore","dataset":{compact(f"finscore.{model}")},"risk_score":'
        ),
        score,
        optional("window_start", ',"start":"', window, '"'),
        constant(f'}},"rule":{compact(rule)},"log":{{"file":{{"path":'),
        _json("file"),
        constant("}}"),
        optional("source_ip", ',"source":{"ip":', _json("source_ip"), "}"),
        optional("user_name", ',"user":{"name":', _json("user_name"), "}"),
        constant(',"finscore":{"row":'),
        pl.col("row").cast(pl.String),
        constant(',"record_id":'),
        _json("record_id"),
        constant(',"anomaly_score":'),
        score,
        constant(f',"threshold":{compact(threshold)},"top_features":'),
        _json("top_features"),
        constant(f',"model":{compact(model)},"model_version":{compact(version)}}}}}'),
    ]
    return alerts.select(pl.concat_str(parts).alias("line"))


@dataclass(frozen=True)
class AlertFormat:
    """How a scan writes its alerts: ``.parquet`` as flat columns, anything else as ECS JSON lines, naming the
    model that raised them; ``started`` (every alert's ``@timestamp``) is the scan's first start, kept across a
    resume. Picklable, so Dask workers write their parts in the output's own format."""

    parquet: bool
    model: str
    version: str
    threshold: float | None
    started: datetime

    @classmethod
    def of(cls, out: Path, *, model: str, version: str, threshold: float | None, started: datetime) -> AlertFormat:
        return cls(out.suffix.lower() in {".parquet", ".pq"}, model, version, threshold, started)

    @property
    def suffix(self) -> str:
        return ".parquet" if self.parquet else ".jsonl"

    def render(self, alerts: pl.DataFrame) -> pl.DataFrame:
        """``alerts`` (:data:`ALERT_SCHEMA`) as they are written: flat columns, or a ``line`` of ECS JSON each."""
        if self.parquet:
            return alerts.with_columns(
                pl.lit(self.threshold, dtype=pl.Float64).alias("threshold"),
                pl.lit(self.model).alias("model"),
                pl.lit(self.version).alias("model_version"),
            )
        timestamp = self.started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return _ecs_lines(alerts, model=self.model, version=self.version, threshold=self.threshold, timestamp=timestamp)

    def write(self, alerts: pl.DataFrame, path: Path) -> None:
        """Write ``alerts`` to ``path`` in this format, atomically (a part, or a whole output)."""
        tmp = path.with_name(f".{path.name}.partial")
        rendered = self.render(alerts)
        if self.parquet:
            rendered.write_parquet(tmp)
        else:  # the lines are JSON already: written as they are, one a line
            rendered.write_csv(tmp, include_header=False, quote_style="never")
        tmp.replace(path)

    def join(self, parts: Sequence[Path], out: Path) -> Path:
        """Write ``out`` atomically from ``parts`` (files :meth:`write` wrote), in their order: JSON lines are
        copied byte for byte, Parquet parts are read and written as one file."""
        out.parent.mkdir(parents=True, exist_ok=True)
        if not parts:
            self.write(pl.DataFrame(schema=ALERT_SCHEMA), out)
            return out
        tmp = out.with_name(f".{out.name}.partial")
        if self.parquet:
            pl.concat([pl.read_parquet(p) for p in parts], how="diagonal_relaxed").write_parquet(tmp)
        else:
            with tmp.open("wb") as dst:
                for part in parts:
                    with part.open("rb") as src:
                        _append(src, dst)
        tmp.replace(out)
        return out


def _append(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy ``src`` to the end of ``dst``: within the kernel where the file system can (a scan's alerts are
    tens of megabytes, twice through Python's buffers otherwise), else through them."""
    left = os.fstat(src.fileno()).st_size
    try:
        while left > 0:
            copied = os.copy_file_range(src.fileno(), dst.fileno(), left)
            if not copied:
                break
            left -= copied
    except OSError:  # a file system without it: both offsets are where the copy stopped
        shutil.copyfileobj(src, dst, _COPY_CHUNK)
