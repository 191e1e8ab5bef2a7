"""A scan's audit trail, written while the scan runs: one ``decision`` line per alert, batch by batch.

The lines are hash-chained, so they are appended by one writer, and in one order: the order of the
checkpoint's batches (unit by unit, batch by batch), whichever unit finishes first. That is the order a scan
that audits after its last batch writes them in, so both write the same appends, and a resumed scan, which
skips what the log already holds (:meth:`engine.security.trail.DecisionAudit.resume`), ends the same.

:class:`AuditWriter` does it on a thread of its own while the units are scored: a unit tells it each batch it
has finished (a stem, never the alerts: they are read back from the batch's ``.audit.arrow`` part when their
turn comes, so what waits for the writer is a name, and memory does not grow with the rows). Appending is
mostly hashing, checks and an fsync per few thousand lines; done here, it overlaps the scoring instead of
following it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from engine.security.trail import SUBJECT, DecisionAudit

__all__ = ["AuditWriter", "audit_batch", "stem"]

#: What a unit sends when it has no batch left: (unit, _END, number of batches).
_END = -1


def stem(unit: int, batch: int) -> str:
    """The name of a batch's parts in the checkpoint, e.g. ``u00003-b000012``."""
    return f"u{unit:05d}-b{batch:06d}"


def audit_batch(audit: DecisionAudit, state: Path, name: str, number: dict[str, int]) -> None:
    """Queue the ``decision`` lines of batch ``name`` (its ``.audit.arrow`` part): request id
    ``<run>/<file number>:<row>``, ``number`` giving each file's number."""
    with pa.OSFile(str(state / f"{name}.audit.arrow")) as f:  # Arrow's reader: a third of read_ipc's cost
        alerts = pl.from_arrow(ipc.open_file(f).read_all())
    assert isinstance(alerts, pl.DataFrame)
    audit.record(
        alerts.select(
            pl.format("{}:{}", pl.col("file").replace_strict(number, default=-1), pl.col("row")).alias("row"),
            pl.lit("alert").alias("decision"),
            pl.col("anomaly_score"),
            *([pl.col(SUBJECT)] if SUBJECT in alerts.columns else []),
        ),
        batch=name,
    )


class AuditWriter:
    """Appends the decision lines of a scan's batches, in checkpoint order, on a thread of its own.

    Units call :meth:`done` after each batch's ``.done`` marker (or for a batch an earlier attempt finished)
    and :meth:`ended` when they have no batch left; :meth:`finish` waits for the last line to be queued and
    flushes. An error in the writer (the log cannot be written) is raised by :meth:`check` and
    :meth:`finish`; :meth:`stop` ends the thread without writing what is still queued, as a kill would.
    """

    def __init__(self, audit: DecisionAudit, state: Path, files: Sequence[str], units: int) -> None:
        self.audit = audit
        self.state = state
        self.units = units
        self._number = {f: i for i, f in enumerate(files)}
        self._inbox: queue.SimpleQueue[tuple[int, int, int]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="finscore-audit", daemon=True)
        self._thread.start()

    def done(self, unit: int, batch: int) -> None:
        """Batch ``batch`` of ``unit`` is finished: its parts are on disk."""
        self._inbox.put((unit, batch, 0))

    def ended(self, unit: int, batches: int) -> None:
        """``unit`` has ``batches`` batches, every one of them finished."""
        self._inbox.put((unit, _END, batches))

    def check(self) -> None:
        """Raise what stopped the writer, if anything did."""
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Wait for every unit's lines to be queued, then append what is left (raises the writer's error)."""
        self._thread.join()
        self.check()
        self.audit.flush()

    def stop(self) -> None:
        """End the thread after the append it is in, if any, leaving queued lines unwritten."""
        self._stopping.set()
        self._inbox.put((-1, _END, 0))  # wakes the thread
        self._thread.join()

    def _run(self) -> None:
        finished: set[tuple[int, int]] = set()
        ends: dict[int, int] = {}
        unit = batch = 0
        try:
            while unit < self.units and not self._stopping.is_set():
                if (unit, batch) in finished:
                    finished.discard((unit, batch))
                    audit_batch(self.audit, self.state, stem(unit, batch), self._number)
                    batch += 1
                elif ends.get(unit) == batch:
                    unit, batch = unit + 1, 0
                else:
                    u, b, n = self._inbox.get()
                    if b == _END:
                        ends[u] = n
                    else:
                        finished.add((u, b))
        except BaseException as exc:  # handed to the scan's thread, which raises it (a kill included)
            self._error = exc
