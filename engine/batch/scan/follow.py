"""Work that follows a scan batch by batch, in checkpoint order, on a thread of its own.

A scan's units finish their batches in any order (two run at once, and a resumed scan skips the finished
ones), but what follows them must see them in one order: the audit log's lines are hash-chained, and a SIEM
collector should get a scan's alerts as a clean run writes them. :class:`BatchFollower` takes the batches'
names as units report them and hands each to :meth:`BatchFollower.take` in checkpoint order (unit by unit,
batch by batch). What waits in its queue is a batch's name; the follower reads what it needs from the batch's
parts when the batch's turn comes, so memory does not grow with the rows. A follower may also keep what units
hand over for a few batches (:attr:`BatchFollower.holding`: the audit writer keeps the frames it would
otherwise read back); past that many it reads the parts. A follower may run below the scan's threads
(:attr:`BatchFollower.nice`), so scoring gets the cores first; what is left when the units have ended,
:meth:`BatchFollower.take_rest` takes on the caller's thread, at the caller's priority.

:class:`Followers` is what units report to: every follower of a scan at once (the audit writer of
:mod:`engine.batch.scan.decisions`, the SIEM forwarder of :mod:`engine.batch.scan.siem`).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["BatchFollower", "Followers", "stem"]

log = logging.getLogger(__name__)

#: What a unit sends when it has no batch left: (unit, _END, number of batches).
_END = -1
_STEM = re.compile(r"u(\d{5})-b(\d{6})")


def stem(unit: int, batch: int) -> str:
    """The name of a batch's parts in the checkpoint, e.g. ``u00003-b000012``."""
    return f"u{unit:05d}-b{batch:06d}"


def lower_priority(by: int) -> None:
    """Run the calling thread ``by`` nice levels below where it runs (at most 19), on Linux, where a thread has a
    nice value of its own (elsewhere the call would renice the whole process: nothing is done). Best effort: a
    system that refuses leaves the thread as it was. A thread started from this one inherits its priority, so
    Polars' pool, which starts on first use, is started first."""
    if by <= 0 or not sys.platform.startswith("linux"):
        return
    import polars as pl

    pl.thread_pool_size()
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + by, 19))
    except OSError as exc:
        log.debug("could not lower the priority of thread %s: %s", tid, exc)


class BatchFollower:
    """Takes a scan's finished batches in checkpoint order, on a thread of its own.

    Units call :meth:`done` after each batch's ``.done`` marker (or for a batch an earlier attempt finished)
    and :meth:`ended` when they have no batch left. An error in :meth:`take` ends the thread; :meth:`check`
    raises it. :meth:`stop` ends the thread after the batch it is in, leaving the rest untaken, as a kill
    would; :meth:`take_rest` ends it there too, and takes the rest on the caller's thread. Subclasses implement
    :meth:`take`.
    """

    #: How many batches' ``held`` data (:meth:`done`) the follower keeps at once; past that, :meth:`take` gets
    #: None and reads the batch's parts. 0: the follower reads them always.
    holding = 0
    #: How many nice levels below the scan's threads the follower's thread runs (Linux): 0, the same.
    nice = 0

    def __init__(self, units: int, *, name: str) -> None:
        self.units = units
        self._inbox: queue.SimpleQueue[tuple[int, int, int, Any]] = queue.SimpleQueue()
        self._room = threading.Semaphore(self.holding)
        self._stopping = threading.Event()
        self._handing = threading.Event()  # take_rest(): the thread ends after its batch, the caller goes on
        self._finished: dict[tuple[int, int], Any] = {}  # reported, not yet taken: held data by (unit, batch)
        self._ends: dict[int, int] = {}  # unit: its number of batches, once it has ended
        self._next = (0, 0)  # the (unit, batch) to take next
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
        self._halt(self._stopping)

    def take_rest(self) -> None:
        """Take the batches the thread has not, here on the caller's thread (at its priority), after the
        thread ends the batch it is in; raises what stopped the thread. For when every unit has ended: the
        rest are in the queue already."""
        self._halt(self._handing)
        self.check()
        self._follow(None)

    def _halt(self, flag: threading.Event) -> None:
        """Set ``flag`` (the thread ends after the batch it is in), wake the thread and wait for it to end."""
        flag.set()
        self._inbox.put((-1, _END, 0, None))
        self._thread.join()

    def _run(self) -> None:
        try:
            lower_priority(self.nice)
            self.begin()
            self._follow(self._handing)
        except BaseException as exc:  # handed to the scan's thread, which raises it (a kill included)
            self._error = exc

    def _follow(self, until: threading.Event | None) -> None:
        """Take batches in checkpoint order until every unit's are taken, :meth:`stop`, or ``until`` is set."""
        finished, ends = self._finished, self._ends
        while self._next[0] < self.units and not self._stopping.is_set() and not (until and until.is_set()):
            unit, batch = self._next
            if (unit, batch) in finished:
                held = finished.pop((unit, batch))
                self.take(stem(unit, batch), held)
                if held is not None:
                    self._room.release()
                self._next = (unit, batch + 1)
            elif ends.get(unit) == batch:
                self._next = (unit + 1, 0)
            else:
                u, b, n, held = self._inbox.get()
                if b == _END:
                    ends[u] = n
                else:
                    finished[u, b] = held


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
