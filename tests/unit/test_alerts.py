"""Alert files: ECS JSON lines are valid JSON whatever the carried values hold, parts join in order."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from engine.batch.scan.alerts import ALERT_SCHEMA, AlertFormat

STARTED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def _alerts() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "file": ['/data/"odd"\\name\n.parquet', "/data/b.csv"],
            "row": [7, 123456789012],
            "record_id": ['id "1"\t\u00e9\u4e2d', None],
            "source_ip": [None, "10.0.0.9"],
            "user_name": [None, "r\u00f6ot"],
            "window_start": [None, datetime(2026, 1, 1, 12, 30)],
            "anomaly_score": [31.25, 1e-3],
            "top_features": [["bytes_in", "flag"], []],
        },
        schema=ALERT_SCHEMA,
    )


def _format(*, parquet: bool = False, threshold: float | None = 24.5) -> AlertFormat:
    return AlertFormat(parquet, "threat", "3", threshold, STARTED)


def test_json_lines_are_ecs_and_carry_every_value_exactly(tmp_path: Path) -> None:
    path = tmp_path / "part.jsonl"
    _format().write(_alerts(), path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["@timestamp"] == "2026-01-02T03:04:05.678901Z"
    assert first["event"] == {
        "kind": "alert",
        "category": ["intrusion_detection"],
        "type": ["info"],
        "module": "finscore",
        "dataset": "finscore.threat",
        "risk_score": 31.25,
    }
    assert first["rule"] == {"name": "finscore threat autoencoder", "version": "3"}
    assert first["log"]["file"]["path"] == '/data/"odd"\\name\n.parquet'
    assert "source" not in first and "user" not in first  # absent, not null, where the row has none
    assert first["finscore"] == {
        "row": 7,
        "record_id": 'id "1"\t\u00e9\u4e2d',
        "anomaly_score": 31.25,
        "threshold": 24.5,
        "top_features": ["bytes_in", "flag"],
        "model": "threat",
        "model_version": "3",
    }
    assert second["source"] == {"ip": "10.0.0.9"} and second["user"] == {"name": "r\u00f6ot"}
    assert second["event"]["start"] == "2026-01-01T12:30:00.000Z"
    assert second["event"]["risk_score"] == pytest.approx(1e-3, rel=1e-6)
    assert second["finscore"]["row"] == 123456789012 and second["finscore"]["record_id"] is None
    assert second["finscore"]["top_features"] == []


def test_a_model_without_threshold_writes_null(tmp_path: Path) -> None:
    path = tmp_path / "part.jsonl"
    _format(threshold=None).write(_alerts().head(1), path)
    assert json.loads(path.read_text(encoding="utf-8"))["finscore"]["threshold"] is None


@pytest.mark.parametrize("parquet", [False, True])
def test_parts_join_in_order_and_no_alerts_is_an_empty_file(tmp_path: Path, parquet: bool) -> None:
    fmt = _format(parquet=parquet)
    alerts = _alerts()
    parts = []
    for i, piece in enumerate([alerts.slice(1, 1), alerts.clear(), alerts.slice(0, 1)]):
        parts.append(tmp_path / f"p{i}{fmt.suffix}")
        fmt.write(piece, parts[-1])
    out = fmt.join(parts, tmp_path / f"out{fmt.suffix}")
    if parquet:
        rows = pl.read_parquet(out).select("row", "threshold", "model").rows()
        assert rows == [(123456789012, 24.5, "threat"), (7, 24.5, "threat")]
    else:
        rows = [json.loads(line)["finscore"]["row"] for line in out.read_text(encoding="utf-8").splitlines()]
        assert rows == [123456789012, 7]
    empty = fmt.join([], tmp_path / f"empty{fmt.suffix}")
    assert (pl.read_parquet(empty).height if parquet else len(empty.read_bytes())) == 0
