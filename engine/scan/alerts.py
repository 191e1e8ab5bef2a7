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

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["ALERT_SCHEMA", "ENTITY_COLUMNS", "alert_frame", "write_alerts"]

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
    """The alerts among one scored batch: ``kept`` are the scored rows' positions in ``frame``."""
    if not len(kept):
        return pl.DataFrame(schema=ALERT_SCHEMA)
    flagged = np.asarray(outputs["is_threat"]).reshape(len(kept)).astype(bool)
    rows = kept[flagged]
    if not len(rows):
        return pl.DataFrame(schema=ALERT_SCHEMA)
    top = np.asarray(outputs["top_features"]).reshape(len(kept), -1)[flagged]
    scores = np.asarray(outputs["anomaly_score"], dtype=np.float32).reshape(len(kept))[flagged]
    picked = frame[rows]

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


def _ecs(alerts: pl.DataFrame, *, model: str, version: str, threshold: float | None, timestamp: str) -> pl.DataFrame:
    has_source = alerts.get_column("source_ip").is_not_null().any()
    has_user = alerts.get_column("user_name").is_not_null().any()
    has_window = alerts.get_column("window_start").is_not_null().any()
    event = [
        pl.lit("alert").alias("kind"),
        pl.lit(["intrusion_detection"]).alias("category"),
        pl.lit(["info"]).alias("type"),
        pl.lit("finscore").alias("module"),
        pl.lit(f"finscore.{model}").alias("dataset"),
        pl.col("anomaly_score").cast(pl.Float64).alias("risk_score"),
    ]
    if has_window:
        event.append(pl.col("window_start").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").alias("start"))
    cols = [
        pl.lit(timestamp).alias("@timestamp"),
        pl.struct(event).alias("event"),
        pl.struct(pl.lit(f"finscore {model} autoencoder").alias("name"), pl.lit(version).alias("version")).alias(
            "rule"
        ),
        pl.struct(pl.struct(pl.col("file").alias("path")).alias("file")).alias("log"),
    ]
    if has_source:
        cols.append(pl.struct(pl.col("source_ip").alias("ip")).alias("source"))
    if has_user:
        cols.append(pl.struct(pl.col("user_name").alias("name")).alias("user"))
    cols.append(
        pl.struct(
            pl.col("row"),
            pl.col("record_id"),
            pl.col("anomaly_score").cast(pl.Float64),
            pl.lit(threshold, dtype=pl.Float64).alias("threshold"),
            pl.col("top_features"),
            pl.lit(model).alias("model"),
            pl.lit(version).alias("model_version"),
        ).alias("finscore")
    )
    return alerts.select(cols)


def write_alerts(
    alerts: pl.DataFrame, out: Path, *, model: str, version: str, threshold: float | None, started: datetime
) -> Path:
    """Write ``out`` atomically: ``.parquet`` as flat columns, anything else as ECS JSON lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    timestamp = started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if out.suffix.lower() in {".parquet", ".pq"}:
        alerts.with_columns(
            pl.lit(threshold, dtype=pl.Float64).alias("threshold"),
            pl.lit(model).alias("model"),
            pl.lit(version).alias("model_version"),
        ).write_parquet(tmp)
    else:
        _ecs(alerts, model=model, version=version, threshold=threshold, timestamp=timestamp).write_ndjson(tmp)
    tmp.replace(out)
    return out
