"""A scan's audit trail, written while the scan runs: one ``decision`` line per alert, batch by batch.

The lines are hash-chained, so they are appended by one writer, and in one order: the order of the
checkpoint's batches (unit by unit, batch by batch), whichever unit finishes first. That is the order a scan
that audits after its last batch writes them in, so both write the same appends, and a resumed scan, which
skips what the log already holds (:meth:`engine.security.trail.DecisionAudit.resume`), ends the same.

:class:`AuditWriter` does it on a thread of its own while the units are scored (a
:class:`engine.batch.scan.follow.BatchFollower`): a unit tells it each batch it has finished, with the frame it
wrote to the batch's ``.audit.arrow`` part (:class:`Held`). The writer keeps the frames of at most
:attr:`AuditWriter.holding` batches; for any other batch it reads the part back when the batch's turn comes,
so memory does not grow with the rows. (Reading a part and finding its one file cost a third of the writer's
work.) Appending is
mostly hashing, checks and an fsync per few thousand lines; done here, it overlaps the scoring instead of
following it, and at a lower priority (:attr:`AuditWriter.nice`), so it takes what CPU the scoring leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from engine.batch.scan.follow import BatchFollower, stem
from engine.security.trail import DecisionAudit

__all__ = ["AuditWriter", "Held", "audit_batch", "stem"]


class Held(NamedTuple):
    """A batch's ``.audit.arrow`` part as its unit still holds it: the frame, and the ``file`` every row of it
    has (None: not known without reading the rows)."""

    alerts: pl.DataFrame
    file: str | None


def audit_batch(audit: DecisionAudit, state: Path, name: str, number: dict[str, int], held: Held | None = None) -> None:
    """Queue the ``decision`` lines of batch ``name`` (its ``.audit.arrow`` part, or the same frame ``held``):
    request id ``<run>/<file number>:<row>``, ``number`` giving each file's number."""
    if held is not None:
        alerts, file = held
    else:
        with pa.memory_map(str(state / f"{name}.audit.arrow")) as f:  # Arrow's reader, mapped: nothing copied
            read = pl.from_arrow(ipc.open_file(f).read_all())
        assert isinstance(read, pl.DataFrame)
        alerts, file = read, None
    if file is None:
        files = alerts.get_column("file").unique()
        file = files.item() if len(files) == 1 else None
    if file is not None:  # a batch is of one file: its number is the request ids' prefix, the rows stay numbers
        audit.record(alerts, batch=name, prefix=f"{number.get(file, -1)}:", decided="alert")
        return
    row = pl.format("{}:{}", pl.col("file").replace_strict(number, default=-1), pl.col("row")).alias("row")
    audit.record(alerts.with_columns(row), batch=name, decided="alert")


class AuditWriter(BatchFollower):
    """Appends the decision lines of a scan's batches, in checkpoint order, on a thread of its own.

    Units call :meth:`done` after each batch's ``.done`` marker (or for a batch an earlier attempt finished)
    and :meth:`ended` when they have no batch left; :meth:`finish` waits for the last line to be queued and
    flushes. An error in the writer (the log cannot be written) is raised by :meth:`check` and
    :meth:`finish`; :meth:`stop` ends the thread without writing what is still queued, as a kill would.
    """

    #: Frames handed over by units (:class:`Held`) kept at once: a few batches' alerts; the writer keeps up.
    holding = 8
    #: Below the units: hashing and writing the lines takes the cores scoring leaves idle, rather than a share
    #: of the scoring's (a scan of 1M events with 57k alerts: 30-40 ms of CPU); :meth:`finish` takes what is left.
    nice = 19

    def __init__(
        self,
        audit: DecisionAudit,
        state: Path,
        files: Sequence[str],
        units: int,
        *,
        start: Callable[[], None] | None = None,
    ) -> None:
        self.audit = audit
        self.state = state
        self._number = {f: i for i, f in enumerate(files)}
        self._start = start
        super().__init__(units, name="finscore-audit")

    def begin(self) -> None:
        """``start`` (the scan notes where its lines begin in the log, a few ms of fsync): here, on this thread,
        before the first line, while the units already score."""
        if self._start is not None:
            self._start()

    def take(self, name: str, held: Held | None = None) -> None:
        audit_batch(self.audit, self.state, name, self._number, held)

    def finish(self) -> None:
        """Once every unit has ended: queue the lines of the batches the thread has not taken, here, at the
        caller's priority, and append what is left (raises the writer's error)."""
        self.take_rest()
        self.audit.flush()
