"""Running a scan: units → batches → scores → alert parts, with a checkpoint after every batch.

Over ~400 lines on purpose: the checkpoint, the batch loop and the finish share one manifest and one
order of writes, and that order is what makes a killed scan resume without duplicates; it reads best whole.

The checkpoint is a hidden folder beside the output, ``.<out>.scan/``: a manifest (inputs with size and
modification time, model and version, batch size, start time) and, per finished batch, its alerts already
in the output's format, its rejects and a ``.done`` marker written last. A batch counts as finished only
once its marker exists, so a scan killed at any instant resumes by skipping finished batches and redoing the
one it was in: no alert is lost and none is written twice. When every batch is done the parts are joined,
in input order, into the output (JSON lines byte for byte), the rejects report and the summary, and the
folder is removed. The work per alert is done where the batch was scored, on as many threads or Dask
workers as score; joining is only copying.

The audit log cannot be rolled back with the checkpoint: its lines are chained and never rewritten. So each
``decision`` line names its run (the manifest's run id, the same on every attempt) and its batch, the log's
size is noted in the checkpoint before the first line goes out, and an attempt that finds that note reads the
log from there and writes only the decisions, and the ``run`` line, still missing. A scan killed at any step,
even between two appends of one flush, ends with each alert audited exactly once. The decision lines are
written while the units are scored, by one writer thread in batch order (:mod:`engine.batch.scan.decisions`);
a Dask scan writes them after its last batch, in the same order.

Dask runs units on its workers and the parts are the same files, so a distributed scan writes exactly the
alerts of a single-process one.

With a SIEM target, a forwarder thread (:mod:`engine.batch.scan.siem`) sends each finished batch's alerts part
to the collector, in the same order, and marks it; a scan whose collector stayed down keeps its checkpoint
after writing the output, so that running it again sends only the batches still unmarked.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.batch.scan.alerts import ENTITY_COLUMNS, AlertFormat, alert_frame
from engine.batch.scan.backends import Backend, LocalSpec, ServerSpec, close_backends, open_backend
from engine.batch.scan.decisions import AuditWriter, Held, audit_batch, stem
from engine.batch.scan.follow import Followers
from engine.batch.scan.plan import Unit, Windows, discover, fingerprint, plan_units, unit_batches
from engine.batch.scan.siem import SiemForwarder, SiemTarget
from engine.batch.score import Reject
from engine.errors import InvalidInputError, ServerUnavailableError
from engine.security.guard import OutputGuard, drop_subject
from engine.security.protect import mask_text
from engine.security.trail import SUBJECT, DecisionAudit, Trail, new_run_id
from engine.tables.io import require_columns

#: What an alert carries from its input row: card numbers in them are masked, --tokenize/--encrypt apply.
CARRIED = ("record_id", "user_name", "source_ip", "file")
#: Whom an alert is about: the user of an auth-log window, else its address; never its record id (an event id
#: names no person, and the decision's request id leads back to the row already).
SUBJECTS = ("user_name", "source_ip")
#: Checkpoint marks: the audit log and its size before this run's first decision line; every line written.
_AUDITING = "auditing"
_AUDITED = "audited"
#: Manifest fields that are not part of what a scan is (a resumed scan keeps them).
_OWN = ("started", "run")
_AUDIT_COLUMNS = {"file", "row", "anomaly_score", SUBJECT}

__all__ = ["ScanSummary", "run_unit", "scan"]

_REJECT_SCHEMA = {"file": pl.String, "row": pl.Int64, "column": pl.String, "reason": pl.String}
OUTPUT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".pq")
_COUNTS = ("rows", "scored", "rejected", "alerts", "lines", "unparsed")


@dataclass
class ScanSummary:
    files: int = 0
    units: int = 0
    rows_read: int = 0
    scored: int = 0
    rejected: int = 0
    alerts: int = 0
    log_lines: int = 0
    unparsed_lines: int = 0
    resumed_batches: int = 0
    seconds: float = 0.0
    rows_this_run: int = 0
    model: str = ""
    version: str = ""
    out: str = ""
    rejects_path: str | None = None
    transport: str = ""
    siem: str = ""
    #: Alerts sent to the SIEM by this attempt, and batches left unsent (with the sentence saying so).
    forwarded: int = 0
    unforwarded_batches: int = 0
    siem_problem: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        text = (
            f"read {self.rows_read:,} rows from {self.files} file{'s' if self.files != 1 else ''}, "
            f"scored {self.scored:,}, rejected {self.rejected:,}, alerts {self.alerts:,} "
            f"({self.rows_per_second:,.0f} rows/s)"
        )
        if self.log_lines:
            text += f"; log lines {self.log_lines:,}, not sshd lines {self.unparsed_lines:,}"
        if self.resumed_batches:
            text += f"; resumed: {self.resumed_batches} batches were already done"
        if self.rejected and self.rejects_path:
            text += f"; rejected rows are listed in {self.rejects_path}"
        if self.siem:
            text += f"; {self.forwarded:,} alerts forwarded to {self.siem}"
        return text


def _phase(name: str) -> None:
    """A step of the scan has just become durable: ``batch`` (one batch's ``.done`` marker), ``scanned``
    (every batch), ``auditing`` (where this run's audit lines start is noted), ``audited`` (every decision
    line), ``written`` (alerts and rejects in place), ``closed`` (the ``run`` line), ``summarised`` (the
    summary, only the checkpoint left to remove). Nothing happens here: the exactly-once tests replace it to
    stop a scan at each of these points, as a kill would."""


def _state_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.scan")


def _remove_state(state: Path) -> None:
    """The manifest first: a folder without one is never resumed, so a scan killed while its checkpoint goes
    is a finished scan, and the next one clears what is left."""
    (state / "manifest.json").unlink(missing_ok=True)
    shutil.rmtree(state)


def _atomic_frame(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` atomically: Arrow IPC for ``.arrow`` (cheapest for parts read back once),
    else Parquet."""
    tmp = path.with_name(path.name + ".partial")
    if path.suffix == ".arrow":
        frame.write_ipc(tmp)
    else:
        frame.write_parquet(tmp)
    tmp.replace(path)


def _atomic_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def run_unit(
    unit: Unit,
    spec: LocalSpec | ServerSpec,
    state: str,
    *,
    batch_rows: int,
    windows: Windows = Windows(),  # noqa: B008 - frozen, so one shared default is safe
    on_batch: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    guard: OutputGuard | None = None,
    fmt: AlertFormat,
    followers: Followers | None = None,
) -> dict[str, int]:
    """Score every unfinished batch of ``unit``, writing its parts under ``state``; counts of this call.
    ``stop`` (set by an interrupted scan) ends the unit after its current batch. ``guard`` protects the
    alerts before their part is written (card numbers are masked without one too); ``fmt`` is the output's
    format; ``followers`` (the audit writer, the SIEM forwarder) are told of each finished batch (this
    attempt's or an earlier one's)."""
    guard = guard or OutputGuard.build(CARRIED)
    backend = open_backend(spec)
    d = Path(state)
    done = {p.name for p in d.glob(f"u{unit.index:05d}-*.done")}
    counts = dict.fromkeys((*_COUNTS, "resumed"), 0)
    lines: dict[str, int] = {}
    # What alerts and scoring read: the model's inputs, its id column, an auth-log window's entity.
    wanted = [*(n for n, _ in backend.inputs), *filter(None, (backend.id_column, *ENTITY_COLUMNS))]
    too_long: dict[int, str] = {}  # CSV rows over the row limit: a blank row in their place, rejected below
    batches = unit_batches(unit, batch_rows=batch_rows, windows=windows, lines=lines, columns=wanted, too_long=too_long)
    guarded_file = _guard_file(guard, unit.path)
    b = -1
    for b, (first_row, frame) in enumerate(batches):
        if stop is not None and stop.is_set():
            return counts
        if b == 0 and unit.kind == "authlog":  # a log's columns exist only once it is parsed
            require_columns(frame.columns, [n for n, _ in backend.inputs], source=f"{unit.path} (auth-log windows)")
        name = stem(unit.index, b)
        if f"{name}.done" in done:
            counts["resumed"] += 1
            if followers is not None:
                followers.done(unit.index, b)
            continue
        outputs, kept, rejects = _score_readable(backend, frame, first_row, too_long)
        alerts = alert_frame(frame, kept, outputs, file=unit.path, first_row=first_row, id_column=backend.id_column)
        protected = _guarded(guard, alerts, guarded_file)
        # What the audit log's decision lines need, kept even when this run writes none: a later run that
        # resumes this checkpoint may be one that does (``finscore scan`` always audits).
        audited = protected.select(c for c in protected.columns if c in _AUDIT_COLUMNS)
        _atomic_frame(audited, d / f"{name}.audit.arrow")
        fmt.write(drop_subject(protected), d / f"{name}.alerts{fmt.suffix}")
        if rejects:
            rej = pl.DataFrame(
                {
                    "file": [unit.path] * len(rejects),
                    "row": [first_row + r.row for r in rejects],
                    "column": [r.column for r in rejects],
                    "reason": [mask_text(r.reason) for r in rejects],
                },
                schema=_REJECT_SCHEMA,
            )
            _atomic_frame(rej, d / f"{name}.rejects.parquet")
        marker = {"rows": frame.height, "scored": len(kept), "rejected": len(rejects), "alerts": alerts.height}
        if b == 0 and lines:  # a log's line counts belong to its first batch
            marker.update(lines=lines["lines"], unparsed=lines["unparsed"])
        _atomic_json(marker, d / f"{name}.done")
        _phase("batch")
        if followers is not None:
            followers.done(unit.index, b, Held(audited, guarded_file))
        for k, v in marker.items():
            counts[k] += v
        if on_batch is not None:
            on_batch(frame.height)
    if followers is not None:
        followers.ended(unit.index, b + 1)
    return counts


def _guard_file(guard: OutputGuard, path: str) -> str | None:
    """The ``file`` value of a unit's alerts as ``guard`` writes it, worked out once: every alert of a unit
    carries the same path, and masking goes value by value. None when ``file`` is tokenized or encrypted
    (each alert's value is then the guard's to make)."""
    if "file" in guard.tokenize or "file" in guard.encrypt:
        return None
    return guard.apply(pl.DataFrame({"file": [path]}, schema={"file": pl.String})).item(0, "file")


def _guarded(guard: OutputGuard, alerts: pl.DataFrame, file: str | None) -> pl.DataFrame:
    """``guard.apply(alerts)``, with the ``file`` column filled with ``file`` (:func:`_guard_file`) rather
    than guarded alert by alert."""
    if file is None or "file" not in alerts.columns:
        return guard.apply(alerts)
    column = pl.repeat(file, alerts.height, dtype=pl.String, eager=True).alias("file")
    return guard.apply(alerts.drop("file")).insert_column(alerts.columns.index("file"), column)


def _score_readable(
    backend: Backend, frame: pl.DataFrame, first_row: int, too_long: dict[int, str]
) -> tuple[dict[str, np.ndarray], np.ndarray, list[Reject]]:
    """``backend.score(frame)`` for the rows that were read: a row over the CSV row limit stands in ``frame`` as
    a blank row; it is not scored but rejected with its reason (its size, never its content)."""
    blank = [r - first_row for r in too_long if first_row <= r < first_row + frame.height]
    if not blank:
        return backend.score(frame)
    read = np.setdiff1d(np.arange(frame.height), blank)
    outputs, kept, rejects = backend.score(frame[read])
    rejects = [Reject(int(read[r.row]), r.column, r.reason) for r in rejects]
    rejects += [Reject(p, "", too_long.pop(first_row + p)) for p in blank]
    return outputs, read[kept], sorted(rejects, key=lambda r: r.row)


def _manifest(files: list[Path], spec: LocalSpec | ServerSpec, version: str, batch_rows: int, windows: Windows) -> dict:
    target = spec.version_dir if isinstance(spec, LocalSpec) else f"{spec.url}/{spec.model}"
    return {
        "inputs": fingerprint(files),
        "model": target,
        "version": version,
        "batch_rows": batch_rows,
        "windows": [windows.every, windows.by],
    }


def _prepare_state(out: Path, manifest: dict[str, Any], restart: bool) -> tuple[Path, datetime, str]:
    """The checkpoint folder, the scan's start time and its run id: those of the unfinished scan it resumes."""
    d = _state_dir(out)
    path = d / "manifest.json"
    if d.is_dir() and not restart and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if {k: v for k, v in saved.items() if k not in _OWN} == manifest:
            if "run" not in saved:  # begun by a finscore that kept no run id: one from now on
                saved["run"] = new_run_id()
                _atomic_json(saved, path)
            return d, datetime.fromisoformat(saved["started"]), saved["run"]
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    started, run = datetime.now(timezone.utc), new_run_id()
    _atomic_json({**manifest, "started": started.isoformat(), "run": run}, path)
    return d, started, run


def _run_dask(
    address: str,
    units: list[Unit],
    spec: Any,
    state: Path,
    batch_rows: int,
    windows: Windows,
    bar: Any,
    guard: OutputGuard,
    fmt: AlertFormat,
) -> list[dict[str, int]]:
    from distributed import Client, as_completed

    results = []
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError):
        msg = f"no Dask scheduler answers at {address}: start one (`dask scheduler`) or leave out --dask"
        raise ServerUnavailableError(msg) from None
    with client:
        futures = client.map(
            run_unit,
            units,
            spec=spec,
            state=str(state),
            batch_rows=batch_rows,
            windows=windows,
            guard=guard,
            fmt=fmt,
            pure=False,
        )
        for future in as_completed(futures):
            counts = future.result()
            results.append(counts)
            if bar is not None:
                bar.update(counts["rows"])
    return results


def _run_threads(
    units: list[Unit],
    spec: Any,
    state: Path,
    batch_rows: int,
    windows: Windows,
    on_batch: Any,
    guard: OutputGuard,
    fmt: AlertFormat,
    followers: Followers | None = None,
) -> list[dict[str, int]]:
    """Two units at a time: one's Python work (reading, alerts, checkpoint) overlaps the other's kernels and
    network, which release the GIL. Parts are per batch, so the order units finish in does not matter. On an
    error or Ctrl-C (or a failed audit writer among the ``followers``), units not started are dropped and
    running ones stop after their batch."""
    stop = threading.Event()

    def one(unit: Unit) -> dict[str, int]:
        return run_unit(
            unit,
            spec,
            str(state),
            batch_rows=batch_rows,
            windows=windows,
            on_batch=on_batch,
            stop=stop,
            guard=guard,
            fmt=fmt,
            followers=followers,
        )

    pool = ThreadPoolExecutor(max_workers=min(2, len(units)) or 1, thread_name_prefix="finscore-unit")
    try:
        futures = [pool.submit(one, unit) for unit in units]
        results = []
        for future in futures:
            # Wake now and then: Ctrl-C reaches only the main thread, and only between waits.
            while True:
                try:
                    results.append(future.result(timeout=0.2))
                    break
                except FutureTimeout:
                    if followers is not None:
                        followers.check()
        return results
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_audit(audit: DecisionAudit, state: Path) -> None:
    """Note the audit log and its size before this run's first line; or, when an earlier attempt noted them,
    take up what it wrote from there (from the start of the log if the log is another file or shorter now)."""
    mark = state / _AUDITING
    log = audit.trail.log
    where = str(log.path.resolve())
    if mark.is_file():
        noted = json.loads(mark.read_text(encoding="utf-8"))
        since = noted["from"] if noted["log"] == where and log.size() >= noted["from"] else 0
        audit.resume(since)
    else:
        _atomic_json({"log": where, "from": log.size(), "run": audit.run}, mark)
    _phase("auditing")


def _audit_alerts(
    stems: list[str], files: list[str], audit: DecisionAudit, state: Path, writer: AuditWriter | None
) -> None:
    """One ``decision`` line per alert, request id ``<run>/<file number>:<row>``, naming its batch; those an
    earlier attempt of this run wrote are skipped (:func:`_start_audit`). ``writer`` has queued them while the
    units ran; without one (a Dask scan) they are queued here, in the same order."""
    if (state / _AUDITED).is_file():
        return
    if writer is not None:
        writer.finish()
    else:
        number = {f: i for i, f in enumerate(files)}
        for name in stems:
            audit_batch(audit, state, name, number)
        audit.flush()
    _atomic_json({"decisions": audit.written, "run": audit.run}, state / _AUDITED)
    _phase("audited")


def _finish(
    state: Path,
    out: Path,
    summary: ScanSummary,
    fmt: AlertFormat,
    audit: DecisionAudit | None = None,
    files: list[str] | None = None,
    writer: AuditWriter | None = None,
) -> None:
    markers = sorted(state.glob("u*.done"))
    for m in markers:
        counts = json.loads(m.read_text(encoding="utf-8"))
        summary.rows_read += counts["rows"]
        summary.scored += counts["scored"]
        summary.rejected += counts["rejected"]
        summary.alerts += counts["alerts"]
        summary.log_lines += counts.get("lines", 0)
        summary.unparsed_lines += counts.get("unparsed", 0)
    stems = [m.name[: -len(".done")] for m in markers]
    if audit is not None and writer is None:
        _start_audit(audit, state)
    # The output first, while the audit writer's thread appends its last lines: the two overlap. The run line
    # that says the output holds the decisions comes after both; a scan killed in between writes the output
    # again (from the same parts) and audits what is missing.
    fmt.join([state / f"{s}.alerts{fmt.suffix}" for s in stems], out)
    rejects_path = out.with_name(out.stem + ".rejected.csv")
    rejected = [state / f"{s}.rejects.parquet" for s in stems if (state / f"{s}.rejects.parquet").is_file()]
    if rejected:
        pl.concat([pl.read_parquet(p) for p in rejected]).write_csv(rejects_path)
        summary.rejects_path = str(rejects_path)
    else:
        rejects_path.unlink(missing_ok=True)
    if audit is not None:
        _audit_alerts(stems, files or [], audit, state, writer)
    _phase("written")
    if audit is not None:
        audit.close(
            "written", rows=summary.rows_read, scored=summary.scored, rejected=summary.rejected, alerts=summary.alerts
        )
        _phase("closed")


def _closing_backends(fn: Callable[..., ScanSummary]) -> Callable[..., ScanSummary]:
    """Close server clients (and their shared memory) when the scan ends, however it ends."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> ScanSummary:
        try:
            return fn(*args, **kwargs)
        finally:
            close_backends()

    return wrapper


@_closing_backends
def scan(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    spec: LocalSpec | ServerSpec,
    batch_rows: int = 65_536,
    every: str = "10m",
    entity: str = "source_ip",
    dask: str | None = None,
    restart: bool = False,
    progress: bool = True,
    guard: OutputGuard | None = None,
    trail: Trail | None = None,
    siem: SiemTarget | None = None,
) -> ScanSummary:
    """Scan ``paths`` (files or folders) with the model ``spec`` names and write the alerts to ``out``.

    An unfinished earlier scan to the same ``out`` with the same inputs and model is resumed (``restart``
    starts over). ``dask`` is the address of a Dask scheduler to spread the units over. Auth logs become
    windows of ``every`` per ``entity`` (``"source_ip"`` or ``"user"``), as the model was trained on.
    ``guard`` protects what alerts carry (card numbers are masked without one too); with ``trail``, an
    in-process model load, each alert and the finished run are appended to its audit log. With ``siem``,
    each batch's alerts are also sent to that collector while the scan runs; batches it could not take are
    counted in the summary's ``unforwarded_batches``, and the checkpoint is kept for a rerun to send them.
    """
    windows = Windows(every, entity)
    guard = guard or OutputGuard.build(CARRIED)
    if batch_rows < 1:
        msg = f"batch rows must be positive, got {batch_rows}"
        raise InvalidInputError(msg)
    t0 = time.perf_counter()
    out_path = Path(out).resolve()
    if out_path.suffix.lower() not in OUTPUT_SUFFIXES:
        msg = (
            f"{out}: alerts are written as .jsonl (ECS JSON lines) or .parquet, not {out_path.suffix or 'no suffix'!r}"
        )
        raise InvalidInputError(msg)
    if out_path.is_dir():
        msg = f"{out}: is a folder; give the alerts file's name, e.g. {Path(out) / 'alerts.jsonl'}"
        raise InvalidInputError(msg)
    files = discover(paths)
    backend = open_backend(spec)
    units = plan_units(files, needed=[n for n, _ in backend.inputs], unit_rows=batch_rows)
    manifest = _manifest(files, spec, backend.version, batch_rows, windows)
    manifest["protection"] = {"tokenize": list(guard.tokenize), "encrypt": list(guard.encrypt)}
    state, started, run = _prepare_state(out_path, manifest, restart)
    fmt = AlertFormat.of(
        out_path, model=backend.name, version=backend.version, threshold=backend.threshold, started=started
    )
    audit = None
    if trail is not None:
        if isinstance(spec, LocalSpec):
            trail.model_load(backend.name, backend.version, where="in-process")
        audit = DecisionAudit(
            trail,
            command="scan",
            model=backend.name,
            version=backend.version,
            decision="decision",
            score="anomaly_score",
            run=run,
        )
    summary = ScanSummary(
        files=len(files),
        units=len(units),
        model=backend.name,
        version=backend.version,
        out=str(out_path),
        transport=getattr(backend, "transport", "in-process"),
    )
    total = sum(u.rows for u in units if u.rows is not None) if all(u.rows is not None for u in units) else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit=" rows", unit_scale=True, desc="scanning", leave=False)
    writer = None
    if audit is not None and not dask and not (state / _AUDITED).is_file():
        # The decision lines go out while the units are scored: where they start is noted first, by the writer's
        # thread before its first line.
        writer = AuditWriter(
            audit, state, [str(f) for f in files], len(units), start=functools.partial(_start_audit, audit, state)
        )
    forwarder = SiemForwarder(siem, state, fmt, len(units), run=run) if siem is not None else None
    followers = Followers([writer, forwarder])
    try:
        if dask:
            results = _run_dask(dask, units, spec, state, batch_rows, windows, bar, guard, fmt)
            if forwarder is not None:  # Dask's units report to no thread here: the forwarder starts now
                Followers([forwarder]).replay(state)
        else:
            on_batch = bar.update if bar is not None else None
            results = _run_threads(units, spec, state, batch_rows, windows, on_batch, guard, fmt, followers)
    except BaseException:
        for follower in followers.followers:
            follower.stop()
        # Keep a checkpoint worth resuming from; one with no finished batch is only clutter.
        if not any(state.glob("*.done")):
            shutil.rmtree(state, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    summary.resumed_batches = sum(r["resumed"] for r in results)
    summary.rows_this_run = sum(r["rows"] for r in results)
    try:
        _phase("scanned")
        _finish(state, out_path, summary, fmt, audit, [str(f) for f in files], writer)
        if forwarder is not None:
            outcome = forwarder.finish()
            summary.siem, summary.forwarded = forwarder.target.url, outcome.sent
            summary.unforwarded_batches, summary.siem_problem = outcome.unsent, outcome.problem
    finally:
        for follower in followers.followers:
            follower.stop()
    summary.seconds = time.perf_counter() - t0
    summary_path = out_path.with_name(out_path.stem + ".summary.json")
    summary_path.write_text(json.dumps(asdict(summary), indent=2, default=str), encoding="utf-8")
    _phase("summarised")
    if not summary.unforwarded_batches:  # else the checkpoint is what a rerun sends them from
        _remove_state(state)
    return summary
