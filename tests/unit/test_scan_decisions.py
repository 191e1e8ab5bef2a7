"""The scan's audit writer: decision lines in checkpoint order whatever order units finish in, and a failure
in the writer reaching the scan."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from engine.batch.scan.decisions import AuditWriter, Held, stem
from engine.batch.scan.follow import BatchFollower
from engine.security.audit import AuditLog, verify
from engine.security.trail import DecisionAudit, Trail

KEY = b"d" * 32


def _audit(tmp_path: Path) -> DecisionAudit:
    trail = Trail(AuditLog(tmp_path / "audit.jsonl"), KEY)
    return DecisionAudit(
        trail, command="scan", model="threat", version="1", decision="decision", score="anomaly_score", run="r1"
    )


def _frame(rows: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"file": ["/in/a.parquet"] * len(rows), "row": rows, "anomaly_score": [0.5] * len(rows)},
        schema={"file": pl.String, "row": pl.Int64, "anomaly_score": pl.Float32},
    )


def _part(state: Path, unit: int, batch: int, rows: list[int]) -> None:
    _frame(rows).write_ipc(state / f"{stem(unit, batch)}.audit.arrow")


def _request_ids(log: Path) -> list[str]:
    return [json.loads(x)["request_id"] for x in log.read_text(encoding="utf-8").splitlines()]


def test_lines_follow_the_checkpoint_order_not_the_finishing_order(tmp_path: Path) -> None:
    audit = _audit(tmp_path)
    _part(tmp_path, 0, 0, [1, 2])
    _part(tmp_path, 0, 1, [7])
    _part(tmp_path, 1, 0, [])
    _part(tmp_path, 2, 0, [40, 41])
    writer = AuditWriter(audit, tmp_path, ["/in/a.parquet"], units=3)
    writer.done(2, 0)
    writer.ended(2, 1)
    writer.ended(1, 1)
    writer.done(0, 1)
    writer.done(1, 0)
    writer.done(0, 0)
    writer.ended(0, 2)
    writer.finish()
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["request_id"] for x in lines] == ["r1/0:1", "r1/0:2", "r1/0:7", "r1/0:40", "r1/0:41"]
    assert [x["batch"] for x in lines] == [stem(0, 0), stem(0, 0), stem(0, 1), stem(2, 0), stem(2, 0)]
    assert audit.written == 5 and verify(tmp_path / "audit.jsonl").ok


def test_a_failing_writer_is_raised_where_the_scan_waits(tmp_path: Path) -> None:
    writer = AuditWriter(_audit(tmp_path), tmp_path, ["/in/a.parquet"], units=1)
    writer.done(0, 0)  # its part was never written
    writer.ended(0, 1)
    with pytest.raises(FileNotFoundError):
        writer.finish()


def test_a_stopped_writer_writes_nothing_more(tmp_path: Path) -> None:
    _part(tmp_path, 0, 0, [1])
    writer = AuditWriter(_audit(tmp_path), tmp_path, ["/in/a.parquet"], units=2)
    writer.stop()
    writer.done(0, 0)
    writer.ended(0, 1)
    assert not (tmp_path / "audit.jsonl").exists()


def test_a_frame_handed_over_is_written_without_reading_its_part(tmp_path: Path) -> None:
    held, read = tmp_path / "held", tmp_path / "read"
    for d in (held, read):
        d.mkdir()
    _part(read, 0, 0, [3, 5])  # the held writer's folder has no part: reading one would fail
    for d, frame in ((held, Held(_frame([3, 5]), "/in/a.parquet")), (read, None)):
        writer = AuditWriter(_audit(d), d, ["/in/a.parquet"], units=1)
        writer.done(0, 0, frame)
        writer.ended(0, 1)
        writer.finish()
    assert _request_ids(held / "audit.jsonl") == _request_ids(read / "audit.jsonl") == ["r1/0:3", "r1/0:5"]


def test_past_its_holding_the_writer_reads_parts_back(tmp_path: Path) -> None:
    class OneHeld(AuditWriter):
        holding = 1

    writer = OneHeld(_audit(tmp_path), tmp_path, ["/in/a.parquet"], units=1)
    writer.done(0, 1, Held(_frame([9]), "/in/a.parquet"))  # held: batch 0 comes first
    writer.done(0, 0, Held(_frame([1]), "/in/a.parquet"))  # past the holding: its part is read, and there is none
    writer.ended(0, 2)
    with pytest.raises(FileNotFoundError):
        writer.finish()


def test_a_held_frame_without_its_file_is_numbered_from_its_rows(tmp_path: Path) -> None:
    writer = AuditWriter(_audit(tmp_path), tmp_path, ["/in/z.parquet", "/in/a.parquet"], units=1)
    writer.done(0, 0, Held(_frame([4]), None))
    writer.ended(0, 1)
    writer.finish()
    assert _request_ids(tmp_path / "audit.jsonl") == ["r1/1:4"]


class _Taker(BatchFollower):
    """Notes who took each batch, at what nice value; its first batch waits until take_rest has begun."""

    nice = 5

    def __init__(self, units: int) -> None:
        self.taken: list[tuple[str, str, int]] = []
        self.in_first = threading.Event()
        super().__init__(units, name="test-follower")

    def take(self, name: str, held: object = None) -> None:
        if not self.taken:
            self.in_first.set()
            assert self._handing.wait(10)
        me = threading.get_native_id()
        self.taken.append((name, threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, me)))


def test_what_the_thread_has_not_taken_is_taken_on_the_callers_thread_in_order() -> None:
    taker = _Taker(units=1)
    for batch in (2, 0, 1):
        taker.done(0, batch)
    taker.ended(0, 3)
    assert taker.in_first.wait(10)
    taker.take_rest()  # the thread is in batch 0: it ends there, and this thread takes 1 and 2
    assert [(n, who) for n, who, _ in taker.taken] == [
        (stem(0, 0), "test-follower"),
        (stem(0, 1), "MainThread"),
        (stem(0, 2), "MainThread"),
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread has a nice value of its own on Linux only")
def test_a_follower_runs_below_the_scan_and_lowers_no_other_thread() -> None:
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    taker = _Taker(units=1)
    taker.done(0, 0)
    taker.done(0, 1)
    taker.ended(0, 2)
    assert taker.in_first.wait(10)
    taker.take_rest()
    assert [nice for *_, nice in taker.taken] == [min(mine + 5, 19), mine]
    others = {int(t) for t in os.listdir("/proc/self/task")}
    assert {os.getpriority(os.PRIO_PROCESS, t) for t in others} == {mine}  # Polars' pool included
    assert AuditWriter.nice > 0
