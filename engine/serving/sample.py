"""A bounded, rotating sample of what a served model scored: its input rows and scores, as Parquet.

What drift checks and shadow comparisons are run on: ``finscore drift --reference train.csv --current
'$FINSCORE_HOME/samples/churn/3/*.parquet'`` shows how live traffic moved from the training data. Off by default;
``FINSCORE_SAMPLE=churn,fraud`` (or ``all``) switches it on per model.

- One row in ``FINSCORE_SAMPLE_EVERY`` (100) is kept, counted across requests (systematic, so a steady stream
  gives a steady share); a part of ``FINSCORE_SAMPLE_ROWS`` (10,000) rows is written as
  ``$FINSCORE_HOME/samples/<model>/<version>/<instance>-<time>.parquet`` and only the newest
  ``FINSCORE_SAMPLE_PARTS`` (10) parts of the folder are kept: the sample's size is bounded whatever the traffic.
- No customer value is written as it came: the rows' subject (the table's id column, fraud's card) is replaced by
  its keyed pseudonym (the audit trail's key, so ``finscore forget`` can find it), and text columns go through the
  output guard of the batch commands, which masks card numbers.
- ``execute`` only copies the kept rows (a few µs); a thread of its own writes the parts, and :meth:`close`
  writes what is left at unload.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from engine.security.guard import OutputGuard
from engine.security.trail import SUBJECT

__all__ = ["ScoredSample"]

_STOP = None


class ScoredSample:
    """Keeps one row in ``every`` of what a model instance scores, written to ``folder`` ``part_rows`` rows at a
    time, the newest ``parts`` parts kept. ``subjects``: the columns naming the person a row is about (the first
    present is pseudonymised with ``pseudonym_key`` and the columns dropped); ``name``: the part files' prefix."""

    def __init__(
        self,
        folder: Path,
        *,
        name: str,
        subjects: Sequence[str],
        pseudonym_key: bytes,
        every: int = 100,
        part_rows: int = 10_000,
        parts: int = 10,
    ) -> None:
        self.folder = folder
        self.name = name
        self.subjects = tuple(subjects)
        self.every, self.part_rows, self.parts = max(every, 1), max(part_rows, 1), max(parts, 1)
        self._key = pseudonym_key
        self._seen = 0  # rows seen so far: row k is kept when k % every == 0
        self._queue: queue.SimpleQueue[pl.DataFrame | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="finscore-sample", daemon=True)
        self._thread.start()

    def add(self, rows: Mapping[str, object], outputs: Mapping[str, np.ndarray]) -> None:
        """Keep this batch's share of rows: ``rows`` as validated (name → values, one per row), ``outputs`` as
        scored (a column per output with one value per row; wider outputs are left out)."""
        n = len(next(iter(outputs.values()), ()))
        first = (-self._seen) % self.every  # the batch's first row to keep
        self._seen += n
        if first >= n:
            return
        kept = np.arange(first, n, self.every)
        columns: dict[str, object] = {}
        for name, values in rows.items():
            arr = np.asarray(values)
            if arr.ndim >= 1 and len(arr) == n and arr.size == n:
                columns[name] = _plain(arr.reshape(-1)[kept])
        for name, values in outputs.items():
            arr = np.asarray(values)
            if len(arr) == n and arr.size == n:
                columns[name] = _plain(arr.reshape(-1)[kept])
        columns["sampled_at"] = np.full(len(kept), time.time())
        self._queue.put(pl.DataFrame(columns))

    def close(self) -> None:
        """Write what is kept and end the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        pending: list[pl.DataFrame] = []
        held = 0
        while True:
            frame = self._queue.get()
            if frame is not None:
                pending.append(frame)
                held += frame.height
            if held and (held >= self.part_rows or frame is None):
                self._write(pl.concat(pending, how="diagonal_relaxed"))
                pending, held = [], 0
            if frame is None:
                return

    def _write(self, frame: pl.DataFrame) -> None:
        named = [c for c in self.subjects if c in frame.columns]
        text = [c for c, t in frame.schema.items() if t == pl.String]
        guard = OutputGuard.build(text, subject=named, pseudonym_key=self._key)
        protected = guard.apply(frame).drop(named)
        if SUBJECT in protected.columns:
            protected = protected.rename({SUBJECT: "subject"})
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"{time.time() % 1:.6f}"[1:]
        tmp = self.folder / f".{self.name}-{stamp}.parquet.partial"
        protected.write_parquet(tmp)
        tmp.replace(self.folder / f"{self.name}-{stamp}.parquet")
        for old in sorted(self.folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime)[: -self.parts]:
            old.unlink(missing_ok=True)  # another instance may have removed it first


def _plain(arr: np.ndarray) -> np.ndarray:
    """Text as ``str`` (requests carry bytes), other values as they are."""
    if arr.dtype == object:
        return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr], dtype=object)
    return arr
