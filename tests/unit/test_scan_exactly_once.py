"""Exactly-once audit for a resumed scan: a scan stopped after each step it makes durable, as a kill would stop
it, and then run again ends with the alerts of a clean run and each of that run's decision lines in the audit
log exactly once, in a log that still verifies.

The stop is a :class:`Killed` raised where the scan's ``_phase`` hook is called, or right after an append of
decision lines. Like a kill, it leaves the files as they are at that instant: no step it interrupts has
anything of its own to undo there. One case kills a process for real, in the middle of one append.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import engine.batch.scan.run as scan_run
import engine.security.trail as trail_module
from engine.batch.scan import LocalSpec, ScanSummary, scan
from engine.families.threat.train import ThreatTrainResult
from engine.security.audit import AuditLog, Decisions, verify
from engine.security.guard import OutputGuard
from engine.security.trail import Trail
from tests.conftest import read_alerts

KEY = b"p" * 32
#: Batches of the inputs below: a.parquet's four row groups and b.parquet's two, 500 rows each.
BATCHES = 6
#: Decision lines per append: small, so one scan's few hundred alerts take many appends, some in one flush.
LINES_PER_APPEND = 8
PHASES = [
    *(pytest.param("batch", k, id=f"after-batch-{k}") for k in range(1, BATCHES + 1)),
    pytest.param("scanned", 1, id="after-the-last-batch"),
    pytest.param("auditing", 1, id="audit-start-noted"),
    pytest.param("audited", 1, id="after-the-audited-mark"),
    pytest.param("written", 1, id="alerts-renamed-in"),
    pytest.param("closed", 1, id="after-the-run-line"),
    pytest.param("summarised", 1, id="before-the-checkpoint-goes"),
]
_VOLATILE = ("seq", "time", "prev", "hash")


class Killed(BaseException):
    """A kill, as far as the scan can tell: not an ``Exception``, so nothing on the way out mistakes it for an
    error to report."""


@dataclass(frozen=True)
class Clean:
    alerts: list[dict]
    decisions: list[str]
    #: Lines of each append of decision lines, flush by flush, in the clean run.
    flushes: list[list[int]]

    @property
    def appends(self) -> list[int]:
        return [n for flush in self.flushes for n in flush]


@pytest.fixture(scope="module")
def inputs(events: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("once_in")
    events.head(2000).write_parquet(d / "a.parquet", row_group_size=500)
    events.slice(2000, 1000).write_parquet(d / "b.parquet", row_group_size=500)
    return d


@pytest.fixture(scope="module")
def spec(threat_trained: ThreatTrainResult) -> LocalSpec:
    return LocalSpec(str(threat_trained.path), threads=1)


@pytest.fixture(autouse=True)
def small_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail_module, "BATCH", LINES_PER_APPEND)


def _scan(inputs: Path, out: Path, spec: LocalSpec, log: Path) -> ScanSummary:
    """The scan as ``finscore scan`` runs it: subjects pseudonymised, an audit trail."""
    guard = OutputGuard.build(scan_run.CARRIED, subject=scan_run.SUBJECTS, pseudonym_key=KEY)
    return scan([inputs], out, spec=spec, batch_rows=500, progress=False, guard=guard, trail=Trail(AuditLog(log), KEY))


def _lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def _decisions(log: Path) -> tuple[list[str], set[str]]:
    """The decision lines as two runs of one scan write them alike (no seq, time or hashes, no run id in the
    request id), sorted; and the run ids they carried."""
    found, runs = [], set()
    for line in _lines(log):
        if line["event"] == "decision":
            run, _, row = line["request_id"].partition("/")
            runs.add(run)
            same = {k: v for k, v in line.items() if k not in _VOLATILE} | {"request_id": row}
            found.append(json.dumps(same, sort_keys=True))
    return sorted(found), runs


@pytest.fixture(scope="module")
def clean(inputs: Path, spec: LocalSpec, tmp_path_factory: pytest.TempPathFactory) -> Clean:
    d = tmp_path_factory.mktemp("once_clean")
    flushes: list[list[int]] = []
    real_decisions, real_append = Trail.decisions, AuditLog.append_decisions

    def decisions(self: Trail, *args: Any, **kwargs: Any) -> int:
        flushes.append([])
        return real_decisions(self, *args, **kwargs)

    def append_decisions(self: AuditLog, event: str, part: Decisions, **shared: object) -> tuple[int, str]:
        flushes[-1].append(len(part))
        return real_append(self, event, part, **shared)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(trail_module, "BATCH", LINES_PER_APPEND)
        m.setattr(Trail, "decisions", decisions)
        m.setattr(AuditLog, "append_decisions", append_decisions)
        summary = _scan(inputs, d / "alerts.jsonl", spec, d / "audit.jsonl")
    decided, runs = _decisions(d / "audit.jsonl")
    assert not list(d.glob(".*.scan")) and len(runs) == 1
    assert len(decided) == len(set(decided)) == summary.alerts > 4 * LINES_PER_APPEND
    assert all(re.fullmatch(r"u\d{5}-b\d{6}", json.loads(line)["batch"]) for line in decided)
    assert len(flushes[0]) > 1, "the first flush should take several appends, so a kill can fall inside one"
    return Clean(read_alerts(d / "alerts.jsonl"), decided, flushes)


def _rerun_matches(clean: Clean, inputs: Path, out: Path, spec: LocalSpec, log: Path) -> None:
    """Run the same scan again; it must end as the clean run did, auditing each alert once."""
    summary = _scan(inputs, out, spec, log)
    assert read_alerts(out) == clean.alerts
    decided, runs = _decisions(log)
    assert decided == clean.decisions  # the same lines, each once
    assert len(runs) == 1, f"a resumed scan keeps its run id, found {len(runs)}"
    closing = [x for x in _lines(log) if x["event"] == "run"]
    assert len(closing) == 1 and closing[0]["run"] in runs and closing[0]["status"] == "written"
    assert closing[0]["decisions"] == closing[0]["alerts"] == summary.alerts == len(clean.decisions)
    assert verify(log).ok, verify(log).sentence()
    assert not list(out.parent.glob(".*.scan"))


@pytest.mark.parametrize(("phase", "nth"), PHASES)
def test_a_scan_killed_after_a_step_reruns_to_each_decision_once(
    phase: str, nth: int, clean: Clean, inputs: Path, spec: LocalSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, log = tmp_path / "alerts.jsonl", tmp_path / "audit.jsonl"
    calls = itertools.count(1)  # units run on two threads: the nth batch to finish, whichever it is

    def kill(name: str) -> None:
        if name == phase and next(calls) == nth:
            raise Killed(name)

    with monkeypatch.context() as m:
        m.setattr(scan_run, "_phase", kill)
        with pytest.raises(Killed):
            _scan(inputs, out, spec, log)
    _rerun_matches(clean, inputs, out, spec, log)


@pytest.mark.parametrize("where", ["inside-the-first-flush", "between-flushes", "halfway", "after-the-last-append"])
def test_a_scan_killed_while_auditing_reruns_to_each_decision_once(
    where: str, clean: Clean, inputs: Path, spec: LocalSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, log = tmp_path / "alerts.jsonl", tmp_path / "audit.jsonl"
    appends = clean.appends
    nth = {
        "inside-the-first-flush": 1,
        "between-flushes": len(clean.flushes[0]),
        "halfway": len(appends) // 2,
        "after-the-last-append": len(appends),  # every line out, the checkpoint not yet told: the window once lost
    }[where]
    real, calls = AuditLog.append_decisions, itertools.count(1)

    def append_then_kill(self: AuditLog, *args: Any, **kwargs: Any) -> tuple[int, str]:
        head = real(self, *args, **kwargs)
        if next(calls) == nth:
            raise Killed(where)
        return head

    with monkeypatch.context() as m:
        m.setattr(AuditLog, "append_decisions", append_then_kill)
        with pytest.raises(Killed):
            _scan(inputs, out, spec, log)
    held, _ = _decisions(log)
    assert len(held) == sum(appends[:nth])
    _rerun_matches(clean, inputs, out, spec, log)


def test_a_scan_killed_in_the_middle_of_an_append_reruns_to_each_decision_once(
    clean: Clean, inputs: Path, spec: LocalSpec, tmp_path: Path
) -> None:
    out, log = tmp_path / "alerts.jsonl", tmp_path / "audit.jsonl"
    # A real SIGKILL after the 12th decision line of one append reached the file: its third seal of 4 lines.
    script = textwrap.dedent(
        f"""
        import os, signal
        import engine.security.audit as audit
        from engine.batch.scan import LocalSpec, scan
        from engine.batch.scan.run import CARRIED, SUBJECTS
        from engine.security.guard import OutputGuard
        from engine.security.trail import Trail
        key = {KEY!r}
        audit.SEAL = 4  # a big append is written and sealed 4 lines at a time
        real, seals = audit._write_all, []
        def write_all(fd, parts):
            real(fd, parts)
            if b'"event":"decision"' in b"".join(parts):
                seals.append(1)
                if len(seals) == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
        audit._write_all = write_all
        guard = OutputGuard.build(CARRIED, subject=SUBJECTS, pseudonym_key=key)
        trail = Trail(audit.AuditLog({str(log)!r}), key)
        spec = LocalSpec({spec.version_dir!r}, threads=1)
        scan([{str(inputs)!r}], {str(out)!r}, spec=spec, batch_rows=500, progress=False, guard=guard, trail=trail)
        """
    )
    root = Path(__file__).resolve().parents[2]
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(_decisions(log)[0]) == 12 and verify(log).ok  # whole seals: the chain holds, the append is cut
    _rerun_matches(clean, inputs, out, spec, log)
