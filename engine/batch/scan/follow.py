"""Work that follows a scan batch by batch, in checkpoint order, on a thread of its own.

A scan's units finish their batches in any order (two run at once, and a resumed scan skips the finished
ones), but what follows them must see them in one order: the audit log's lines are hash-chained, and a SIEM
collector should get a scan's alerts as a clean run writes them. :class:`BatchFollower` takes the batches'
names as units report them and hands each to :meth:`BatchFollower.take` in checkpoint order (unit by unit,
batch by batch). What waits in its queue is a batch's name; the follower reads what it needs from the batch's
parts when the batch's turn comes, so memory does not grow with the rows. A follower may also keep what units
hand over for a few batches (:attr:`BatchFollower.holding`: the audit writer keeps the frames it would
otherwise read back); past that many it reads the parts.

:class:`Followers` is what units report to: every follower of a scan at once (the audit writer of
:mod:`engine.batch.scan.decisions`, the SIEM forwarder of :mod:`engine.batch.scan.siem`).
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["BatchFollower", "Followers", "stem"]

#: What a unit sends when it has no batch left: (unit, _END, number of batches).
_END = -1
_STEM = re.compile(r"u(\d{5})-b(\d{6})")


def stem(unit: int, batch: int) -> str:
    """The name of a batch's parts in the checkpoint, e.g. ``u00003-b000012``."""
    return f"u{unit:05d}-b{batch:06d}"


class BatchFollower:
    """Takes a scan's finished batches in checkpoint order, on a thread of its own.

    Units call :meth:`done` after each batch's ``.done`` marker (or for a batch an earlier attempt finished)
    and :meth:`ended` when they have no batch left. An error in :meth:`take` ends the thread; :meth:`check`
    raises it. :meth:`stop` ends the thread after the batch it is in, leaving the rest untaken, as a kill
    would. Subclasses implement :meth:`take`.
    """

    #: How many batches' ``held`` data (:meth:`done`) the follower keeps at once; past that, :meth:`take` gets
    #: None and reads the batch's parts. 0: the follower reads them always.
    holding = 0

    def __init__(self, units: int, *, name: str) -> None:
        self.units = units
        self._inbox: queue.SimpleQueue[tuple[int, int, int, Any]] = queue.SimpleQueue()
        self._room = threading.Semaphore(self.holding)
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def take(self, name: str, held: Any = None) -> None:
        """Do this follower's work for batch ``name`` (its parts are on disk); ``held`` is what its unit handed
        over (:meth:`done`), or None."""
        raise NotImplementedError

    def begin(self) -> None:
        """What the thread does before its first batch (nothing, unless a subclass says otherwise)."""

    def done(self, unit: int, batch: int, held: Any = None) -> None:
        """Batch ``batch`` of ``unit`` is finished: its parts are on disk. ``held``: what of them the unit still
        has in memory, kept for :meth:`take` while the follower holds fewer than :attr:`holding`."""
        if held is not None and not self._room.acquire(blocking=False):
            held = None
        self._inbox.put((unit, batch, 0, held))

    def ended(self, unit: int, batches: int) -> None:
        """``unit`` has ``batches`` batches, every one of them finished."""
        self._inbox.put((unit, _END, batches, None))

    def check(self) -> None:
        """Raise what stopped the thread, if anything did."""
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End the thread after the batch it is in, if any, leaving queued batches untaken."""
        self._stopping.set()
        self._inbox.put((-1, _END, 0, None))  # wakes the thread
        self._thread.join()

    def _run(self) -> None:
        finished: dict[tuple[int, int], Any] = {}
        ends: dict[int, int] = {}
        unit = batch = 0
        try:
            self.begin()
            while unit < self.units and not self._stopping.is_set():
                if (unit, batch) in finished:
                    held = finished.pop((unit, batch))
                    self.take(stem(unit, batch), held)
                    if held is not None:
                        self._room.release()
                    batch += 1
                elif ends.get(unit) == batch:
                    unit, batch = unit + 1, 0
                else:
                    u, b, n, held = self._inbox.get()
                    if b == _END:
                        ends[u] = n
                    else:
                        finished[u, b] = held
        except BaseException as exc:  # handed to the scan's thread, which raises it (a kill included)
            self._error = exc


class Followers:
    """The followers units report to, as one (``None`` entries are left out)."""

    def __init__(self, followers: Iterable[BatchFollower | None]) -> None:
        self.followers = [f for f in followers if f is not None]

    def done(self, unit: int, batch: int, held: Any = None) -> None:
        for f in self.followers:
            f.done(unit, batch, held)

    def ended(self, unit: int, batches: int) -> None:
        for f in self.followers:
            f.ended(unit, batches)

    def check(self) -> None:
        for f in self.followers:
            f.check()

    def replay(self, state: Path) -> None:
        """Report every batch finished in the checkpoint ``state``, and the end of every unit: for a scan
        whose units ran elsewhere (Dask), once they all have."""
        counts: dict[int, int] = {}
        for marker in sorted(state.glob("u*.done")):
            found = _STEM.fullmatch(marker.name[: -len(".done")])
            if found:
                unit, batch = int(found.group(1)), int(found.group(2))
                self.done(unit, batch)
                counts[unit] = max(counts.get(unit, 0), batch + 1)
        for f in self.followers:
            for unit in range(f.units):
                f.ended(unit, counts.get(unit, 0))
