"""finscore's own figures on Triton's metrics port, through the python backend's custom metrics.

Triton's port (8002, ``/metrics``) already shows each model's requests, queue and compute times. A served
finscore model adds, labelled with its ``model`` and ``version``:

- ``finscore_score_bucket{le}``, ``finscore_score_sum``, ``finscore_score_count``: the histogram of its scores
  (what Prometheus' ``histogram_quantile`` and Grafana's heatmaps read);
- ``finscore_decisions_total{decision}``: what it decided (fraud's approve / review / decline, threat's alert /
  clear, churn's retention actions);
- ``finscore_rejected_total{reason}``: requests it refused, by reason (:func:`reason_of`).

Why they are counted and sent from a thread: a custom-metric call is a round trip from the stub to the server,
synchronous, 16-19 µs here. An ``observe`` per scored row would put that on every row (a batch of 16: +0.3 ms).
Counting a batch in NumPy costs 40-90 µs in the stub (a fraud authorization's p50 moved by that much), so
``execute`` only keeps a reference to the batch's score and decision outputs (a list append under a lock), and a
thread counts what was kept and sends what changed every ``FINSCORE_METRICS_FLUSH_MS`` (1,000), and at unload.
Past :data:`FOLD_ROWS` kept rows, ``execute`` counts them itself, so a long flush interval never holds more.
The histogram goes as counters, bucket by bucket, because the backend's own histogram takes one value per call;
its series names and ``le`` labels are Prometheus' histogram's. Several instances of a model add to the same series.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import FinscoreError, InvalidInputError, StateUnavailableError

__all__ = ["FOLD_ROWS", "PROBABILITY_BUCKETS", "Monitored", "ServingMetrics", "reason_of"]

#: Kept rows (scores) past which :meth:`ServingMetrics.scored` counts what is kept instead of the thread.
FOLD_ROWS = 1_000_000
#: Upper bounds of the score histogram of a probability.
PROBABILITY_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Monitored:
    """What a scorer's metrics watch: the output holding its score and the histogram's upper bounds; the output
    holding its decision, if any, and the decision's names when that output holds codes (indices into
    ``names``) or yes/no (``names[0]`` for no, ``names[1]`` for yes) rather than text."""

    score: str
    buckets: tuple[float, ...] = PROBABILITY_BUCKETS
    decision: str | None = None
    names: tuple[str, ...] = ()


def reason_of(exc: BaseException) -> str:
    """The ``reason`` label of a refused request: ``missing_input`` (set on the error by the reader),
    ``invalid_input``, ``state_unavailable``, ``refused`` (another finscore error) or ``internal``."""
    given = getattr(exc, "reason", None)
    if isinstance(given, str):
        return given
    if isinstance(exc, StateUnavailableError):
        return "state_unavailable"
    if isinstance(exc, InvalidInputError):
        return "invalid_input"
    return "refused" if isinstance(exc, FinscoreError) else "internal"


class ServingMetrics:
    """The metrics of one served model instance: :meth:`scored` and :meth:`rejected` count, a thread sends.

    ``pb_utils`` is the backend's module (``MetricFamily``); ``monitored`` is None for a model with no score to
    watch (its rejections are still counted). :meth:`close` sends what is left and ends the thread.
    """

    def __init__(
        self, pb_utils: Any, *, model: str, version: str, monitored: Monitored | None, flush_ms: int = 1000
    ) -> None:
        self._labels = {"model": model, "version": str(version)}
        family = pb_utils.MetricFamily
        self._bucket_family = family("finscore_score_bucket", "scores at or below le, counted", family.COUNTER)
        self._sum_family = family("finscore_score_sum", "the sum of the scores", family.COUNTER)
        self._count_family = family("finscore_score_count", "the scores counted", family.COUNTER)
        self._decision_family = family("finscore_decisions_total", "decisions, by decision", family.COUNTER)
        self._rejected_family = family("finscore_rejected_total", "requests refused, by reason", family.COUNTER)
        self.monitored = monitored
        self._bounds = np.asarray(monitored.buckets if monitored else (), dtype=np.float64)
        self._lock = threading.Lock()
        self._buckets = np.zeros(len(self._bounds) + 1, np.int64)  # per bucket, the last one +Inf
        self._sum = 0.0
        self._decisions: dict[str, int] = {}
        self._rejected: dict[str, int] = {}
        self._kept: list[tuple[np.ndarray, np.ndarray | None]] = []  # scored batches not counted yet
        self._kept_rows = 0
        self._metrics: dict[tuple[int, str | None, str], Any] = {}  # made on first use: a server call each
        self._flush_s = max(flush_ms, 1) / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="finscore-metrics", daemon=True)
        self._thread.start()

    def scored(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Keep a batch's scores and decisions (the outputs the scorer computed) for the thread to count."""
        watched = self.monitored
        if watched is None or watched.score not in outputs:
            return
        decision = outputs.get(watched.decision) if watched.decision is not None else None
        score = outputs[watched.score]
        with self._lock:
            self._kept.append((score, decision))
            self._kept_rows += np.size(score)
            if self._kept_rows > FOLD_ROWS:
                self._fold()

    def _fold(self) -> None:
        """Count the kept batches into the histogram and the decisions (the lock held)."""
        kept, self._kept, self._kept_rows = self._kept, [], 0
        self._sum += self._count(kept, self._buckets, self._decisions)

    def _count(
        self, kept: list[tuple[np.ndarray, np.ndarray | None]], buckets: np.ndarray, decisions: dict[str, int]
    ) -> float:
        """Add the ``kept`` batches to ``buckets`` and ``decisions``; answer the sum of their scores.

        The batches are joined first, one array per dtype, and counted in one pass each: a server answering one
        authorization per request keeps a thousand one-row batches a second, and counting them one by one cost
        the thread 30 µs each, holding the interpreter's lock the scoring waits for."""
        total = 0.0
        for score in _joined(batch for batch, _ in kept):
            score = score[np.isfinite(score)]
            # Compared in the scores' own precision: an FP32 0.1 is in the bucket of 0.1, not above it.
            bounds = self._bounds.astype(score.dtype) if score.dtype == np.float32 else self._bounds
            buckets += np.bincount(np.searchsorted(bounds, score, side="left"), minlength=len(buckets))
            total += float(score.sum(dtype=np.float64))
        for given in _joined(decision for _, decision in kept if decision is not None):
            if given.dtype == object:  # text: np.unique would sort it, Counter only hashes
                counted = Counter(given.tolist())
            else:
                values, counts = np.unique(given, return_counts=True)
                counted = Counter(dict(zip(values.tolist(), counts.tolist(), strict=True)))
            for value, n in counted.items():
                name = self._decision_name(value)
                decisions[name] = decisions.get(name, 0) + int(n)
        return total

    def rejected(self, reason: str, requests: int = 1) -> None:
        """Count ``requests`` refused for ``reason``."""
        with self._lock:
            self._rejected[reason] = self._rejected.get(reason, 0) + requests

    def close(self) -> None:
        """Send what is left and end the thread."""
        self._stop.set()
        self._thread.join()
        self.flush()

    def flush(self) -> None:
        """Send what was counted since the last flush (only the series that changed)."""
        with self._lock:
            kept, self._kept, self._kept_rows = self._kept, [], 0
            buckets, self._buckets = self._buckets, np.zeros_like(self._buckets)
            total, self._sum = self._sum, 0.0
            decisions, self._decisions = self._decisions, {}
            rejected, self._rejected = self._rejected, {}
        total += self._count(kept, buckets, decisions)  # outside the lock: execute keeps batches meanwhile
        if buckets.any():
            cumulative = np.cumsum(buckets).tolist()
            bounds = [_le(b) for b in self._bounds.tolist()] + ["+Inf"]
            for le, n in zip(bounds, cumulative, strict=True):
                if n:
                    self._metric(self._bucket_family, "le", le).increment(n)
            self._metric(self._count_family).increment(cumulative[-1])
            self._metric(self._sum_family).increment(total)  # a counter: scores below 0 would need a gauge
        for name, n in decisions.items():
            self._metric(self._decision_family, "decision", name).increment(n)
        for reason, n in rejected.items():
            self._metric(self._rejected_family, "reason", reason).increment(n)

    def _decision_name(self, value: object) -> str:
        names = self.monitored.names if self.monitored else ()
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if names and isinstance(value, bool | int | np.integer | np.bool_) and 0 <= int(value) < len(names):
            return names[int(value)]
        return str(value)

    def _metric(self, family: Any, key: str | None = None, value: str = "") -> Any:
        found = self._metrics.get((id(family), key, value))
        if found is None:
            labels = dict(self._labels) if key is None else {**self._labels, key: value}
            found = self._metrics[(id(family), key, value)] = family.Metric(labels=labels)
        return found

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            try:
                self.flush()
            except Exception:  # noqa: S112 - the server is going away; close() sends what is left
                continue


def _joined(batches: Iterable[np.ndarray]) -> list[np.ndarray]:
    """The values of ``batches`` flattened and joined, one array per dtype (in the order the dtypes come)."""
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for batch in batches:
        values = np.asarray(batch).reshape(-1)
        by_dtype.setdefault(values.dtype, []).append(values)
    return [np.concatenate(parts) for parts in by_dtype.values()]


def _le(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it (``0.5``, ``1``)."""
    return repr(bound) if bound != int(bound) else str(int(bound))
