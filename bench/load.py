"""The load generator: closed loops and open loops against any target, latencies in HDR histograms.

Over ~400 lines on purpose: the closed loop, the open loop and their tallies share one clock and one
histogram discipline, and split across modules they drifted apart once already.

A *target* is what answers a request: Triton over gRPC (requests serialised once, sent with gRPC's own stub so
the client adds as little as perf_analyzer does), a FastAPI JSON endpoint, or the scorer in this process.
Every target is driven by the same two loops:

- closed loop (:func:`closed_loop`): ``concurrency`` workers, each sending its next request as soon as the
  last is answered; latency is measured from the actual send. Network targets are driven by coroutines on one
  event loop (gRPC from 2 workers up, see ``coroutines_from``): on 2 cores shared with the server, threads
  cost the client 100-135 µs of CPU per call at concurrency 16 (gRPC or HTTP), coroutines 40-60 µs, and the
  server under test gets that CPU back;
- open loop (:func:`open_loop`): requests are due at a constant rate or as a Poisson process, whatever the
  answers do; latency is measured from each request's *intended* send time, so time spent waiting behind a
  slow answer is counted (the coordinated omission a closed loop hides). The time from the actual send is
  kept beside it (``service_*``) to show the difference.

Latencies go into ``hdrh`` histograms (1 µs to 10 min, 3 significant digits), one per worker, merged at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from hdrh.histogram import HdrHistogram

__all__ = [
    "AsyncTarget",
    "Measurement",
    "Target",
    "arrival_times",
    "by_second",
    "closed_loop",
    "new_histogram",
    "open_loop",
]

#: HDR range in microseconds: 1 µs to 10 minutes, 3 significant digits.
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 600_000_000, 3
#: Requests in flight at once in an open loop before new ones wait for a free slot (their wait is counted).
OPEN_LOOP_SLOTS = 256


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


class Target(Protocol):
    """What a loop sends requests to. ``call(i)`` sends request ``i`` (modulo the target's pool) and returns
    when it is answered; it raises on an error answer. ``worker()`` returns a ``call`` for one thread."""

    name: str
    batch: int

    def worker(self) -> Callable[[int], None]: ...

    def close(self) -> None: ...


class AsyncTarget(Target, Protocol):
    """A target a closed loop drives from one event loop: ``async with target.async_workers(n) as calls`` opens
    what ``n`` workers send through (connections, a channel) inside the running loop, and closes it after;
    ``await calls[k](i)`` sends request ``i`` and returns when it is answered, raising on an error answer.

    ``coroutines_from`` is the least concurrency at which coroutines cost the client less than threads."""

    coroutines_from: int

    def async_workers(self, n: int) -> AbstractAsyncContextManager[list[Callable[[int], Awaitable[None]]]]: ...


@dataclass
class Measurement:
    """What one loop measured inside its window. Latencies in milliseconds; throughput in inferences (rows)
    per second."""

    requests: int
    errors: int
    seconds: float
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    first_error: str = ""
    #: Closed loops: what sent the requests, ``"threads"`` (one each, blocking) or ``"coroutines"`` (one event
    #: loop); on cores the server shares, the client's own threads compete with the server's.
    driver: str = ""
    #: Closed loops over several windows: the throughput of each (their mean is :attr:`throughput`).
    window_throughputs: list[float] = field(default_factory=list)
    #: Open loops: percentiles from the actual send (what a closed loop would report), and sends that were late.
    service: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.requests * self.batch / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": self.seconds,
            "batch": self.batch,
            "throughput": self.throughput,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "first_error": self.first_error,
            **({"driver": self.driver} if self.driver else {}),
            **({"window_throughputs": self.window_throughputs} if self.window_throughputs else {}),
            **({"service": self.service} if self.service else {}),
        }


def _percentiles(hist: HdrHistogram) -> dict[str, float]:
    if hist.get_total_count() == 0:
        return dict.fromkeys(("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"), float("nan"))
    ms = {k: hist.get_value_at_percentile(q) / 1000.0 for k, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99))}
    ms["p999_ms"] = hist.get_value_at_percentile(99.9) / 1000.0
    ms["max_ms"] = hist.get_max_value() / 1000.0
    return ms


def _merged(hists: list[HdrHistogram]) -> HdrHistogram:
    out = new_histogram()
    for h in hists:
        out.add(h)
    return out


def _first_line(exc: BaseException) -> str:
    """An error answer as one short line (gRPC errors print several)."""
    details = getattr(exc, "details", None)
    if callable(details) and details():
        return str(details()).splitlines()[0][:300]
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _record(hist: HdrHistogram, ns: int) -> None:
    hist.record_value(min(max(ns // 1000, _LOWEST_US), _HIGHEST_US))


class _Tally:
    """One closed-loop worker's answers (an HDR histogram, and a count per window by answer time), errors and
    first error line, inside ``[start, end)`` (ns) that :func:`_open_windows` sets once the workers'
    connections are open."""

    def __init__(self, windows: int = 1) -> None:
        self.hist = new_histogram()
        self.errors = 0
        self.first_error = ""
        self.start = self.end = 0
        self.window_ns = 1
        self.answers = [0] * windows

    def failed(self, exc: BaseException, t0: int) -> None:
        if t0 >= self.start:  # an error answer is counted, never fatal to the loop
            self.errors += 1
            self.first_error = self.first_error or _first_line(exc)

    def answered(self, t0: int, t1: int) -> None:
        if t0 >= self.start and t1 <= self.end:
            _record(self.hist, t1 - t0)
            self.answers[min((t1 - self.start) // self.window_ns, len(self.answers) - 1)] += 1


def _open_windows(tallies: list[_Tally], warmup: float, duration: float) -> None:
    start = time.perf_counter_ns() + int(warmup * 1e9)
    for tally in tallies:
        tally.window_ns = int(duration * 1e9)
        tally.start, tally.end = start, start + tally.window_ns * len(tally.answers)


def closed_loop(
    target: Target, *, concurrency: int, duration: float, warmup: float = 1.0, windows: int = 1
) -> Measurement:
    """``concurrency`` workers sending back to back for ``warmup`` + ``windows`` x ``duration`` seconds; requests
    sent and answered after the warm-up are measured. With several windows (as perf_analyzer's trials) the
    throughput is their mean and each window's is kept: on a noisy machine one window is one sample.

    A target whose ``coroutines_from`` is at most ``concurrency`` (gRPC and HTTP) is driven by ``concurrency``
    coroutines on one event loop (:meth:`AsyncTarget.async_workers`); any other by ``concurrency`` threads, one
    ``worker()`` each.
    """
    if windows < 1:
        msg = f"a closed loop needs at least one window, got {windows}"
        raise ValueError(msg)
    tallies = [_Tally(windows) for _ in range(concurrency)]
    coroutines = concurrency >= getattr(target, "coroutines_from", float("inf"))
    if coroutines:
        asyncio.run(_closed_async(target, tallies, warmup=warmup, duration=duration))  # type: ignore[arg-type]
    else:
        _closed_threads(target, tallies, warmup=warmup, duration=duration)
    hist = _merged([t.hist for t in tallies])
    per_window = [sum(t.answers[w] for t in tallies) * target.batch / duration for w in range(windows)]
    return Measurement(
        int(hist.get_total_count()), sum(t.errors for t in tallies), duration * windows, target.batch,
        **_percentiles(hist), first_error=next((t.first_error for t in tallies if t.first_error), ""),
        driver="coroutines" if coroutines else "threads", window_throughputs=per_window if windows > 1 else [],
    )  # fmt: skip


def _closed_threads(target: Target, tallies: list[_Tally], *, warmup: float, duration: float) -> None:
    calls = [target.worker() for _ in tallies]
    _open_windows(tallies, warmup, duration)

    def work(k: int) -> None:
        call, tally, i = calls[k], tallies[k], k * 7919  # workers start at different requests of the pool
        while (t0 := time.perf_counter_ns()) < tally.end:
            try:
                call(i)
            except Exception as exc:
                tally.failed(exc, t0)
            else:
                tally.answered(t0, time.perf_counter_ns())
            i += 1

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(tallies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def _closed_async(target: AsyncTarget, tallies: list[_Tally], *, warmup: float, duration: float) -> None:
    async with target.async_workers(len(tallies)) as calls:
        _open_windows(tallies, warmup, duration)

        async def work(k: int) -> None:  # _closed_threads' worker, awaiting its call
            call, tally, i = calls[k], tallies[k], k * 7919
            while (t0 := time.perf_counter_ns()) < tally.end:
                try:
                    await call(i)
                except Exception as exc:
                    tally.failed(exc, t0)
                else:
                    tally.answered(t0, time.perf_counter_ns())
                i += 1

        await asyncio.gather(*(work(k) for k in range(len(tallies))))


def arrival_times(rate: float, duration: float, *, arrivals: str = "constant", seed: int = 0) -> np.ndarray:
    """Intended send times (seconds from the start) of an open loop: every ``1/rate`` s, or a Poisson process
    of that mean rate (exponential gaps)."""
    if rate <= 0:
        msg = f"an open loop needs a positive rate, got {rate}"
        raise ValueError(msg)
    n = max(1, int(rate * duration))
    if arrivals == "constant":
        return np.arange(n, dtype=np.float64) / rate
    if arrivals == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
        times = np.cumsum(gaps) - gaps[0]
        return times[times < duration]
    msg = f"arrivals are 'constant' or 'poisson', not {arrivals!r}"
    raise ValueError(msg)


def by_second(offsets: np.ndarray, latency_ns: np.ndarray, duration: float) -> list[float]:
    """The median latency (ms) of the requests due in each second of the measured window (``offsets`` in s from
    its start; negative ones are warm-up; latency -1 = unanswered): above capacity it climbs second by second."""
    out = []
    for second in range(int(np.ceil(duration))):
        due = (offsets >= second) & (offsets < second + 1) & (latency_ns >= 0)
        out.append(round(float(np.median(latency_ns[due])) / 1e6, 3) if due.any() else float("nan"))
    return out


class _OpenTally:
    """What an open loop measured: latencies from the intended and from the actual send, errors, late sends,
    and each request's latency for the by-second timeline. Safe to share between threads."""

    def __init__(self, n: int, *, warmup: float, duration: float) -> None:
        self.t_start = time.perf_counter_ns() + 50_000_000  # time to get the dispatcher going
        self.measure_from = self.t_start + int(warmup * 1e9)
        self.measure_to = self.measure_from + int(duration * 1e9)
        self.intended, self.service = new_histogram(), new_histogram()
        self.errors = self.late = self.answered_in_window = 0
        self.first_error = ""
        self.latency_ns = np.full(n, -1, dtype=np.int64)  # per request, -1 = unanswered
        self.lock = threading.Lock()

    def failed(self, exc: BaseException, intended: int) -> None:
        with self.lock:
            if intended >= self.measure_from:
                self.errors += 1
                self.first_error = self.first_error or _first_line(exc)

    def answered(self, i: int, intended: int, sent: int, done: int) -> None:
        if intended < self.measure_from:
            return
        self.latency_ns[i] = done - intended
        with self.lock:
            _record(self.intended, done - intended)
            _record(self.service, done - sent)
            self.late += sent - intended > 1_000_000
            self.answered_in_window += self.measure_from <= done <= self.measure_to

    def unanswered(self, count: int, drain: float) -> None:
        self.errors += count
        self.first_error = self.first_error or f"{count} requests unanswered {drain:g} s after the last send"


def _dispatch(schedule: np.ndarray, t_start: int, hand_on: Callable[[int, int], object]) -> None:
    """Hand request ``i`` on at its intended time, sleeping in between (not spinning: the server shares these
    cores); a late hand-on is still timed from its due time."""
    for i, offset in enumerate(schedule):
        intended = t_start + int(offset * 1e9)
        if (wait := intended - time.perf_counter_ns()) > 0:
            time.sleep(wait / 1e9)
        hand_on(i, intended)


def open_loop(
    target: Target,
    *,
    rate: float,
    duration: float,
    arrivals: str = "constant",
    warmup: float = 1.0,
    drain: float = 30.0,
    seed: int = 0,
    slots: int = OPEN_LOOP_SLOTS,
) -> Measurement:
    """Send at ``rate`` requests/s (``arrivals``: ``"constant"`` or ``"poisson"``) whatever the answers do.

    A dispatcher thread hands each request at its intended time to one of ``slots`` senders (coroutines on one
    event loop for a target whose ``coroutines_from`` allows, else threads); when all are busy the request
    waits, and that wait is part of its latency. The first ``warmup`` seconds run at the same rate unmeasured.
    Requests still unanswered ``drain`` seconds after the last intended send are counted as errors. Throughput
    is the answers that arrived inside the measured window per second.
    """
    schedule = arrival_times(rate, warmup + duration, arrivals=arrivals, seed=seed)
    if slots >= getattr(target, "coroutines_from", float("inf")):
        driven = _open_async(target, schedule, warmup=warmup, duration=duration, drain=drain, slots=slots)  # type: ignore[arg-type]
        tally = asyncio.run(driven)
    else:
        tally = _open_threads(target, schedule, warmup=warmup, duration=duration, drain=drain, slots=slots)
    measured = sum(1 for offset in schedule if tally.t_start + int(offset * 1e9) >= tally.measure_from)
    service: dict[str, Any] = {**_percentiles(tally.service), "late_sends": tally.late, "scheduled": measured}
    service["p50_by_second_ms"] = by_second(schedule - warmup, tally.latency_ns, duration)
    return Measurement(
        tally.answered_in_window, tally.errors, duration, target.batch, **_percentiles(tally.intended),
        first_error=tally.first_error, service=service,
    )  # fmt: skip


def _open_threads(
    target: Target, schedule: np.ndarray, *, warmup: float, duration: float, drain: float, slots: int
) -> _OpenTally:
    local = threading.local()
    tally = _OpenTally(len(schedule), warmup=warmup, duration=duration)

    def send(i: int, intended: int) -> None:
        call = getattr(local, "call", None)
        if call is None:
            call = local.call = target.worker()
        sent = time.perf_counter_ns()
        try:
            call(i)
        except Exception as exc:
            tally.failed(exc, intended)
        else:
            tally.answered(i, intended, sent, time.perf_counter_ns())

    pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="finscore-open-loop")
    futures: list[Future[None]] = []
    try:
        _dispatch(schedule, tally.t_start, lambda i, intended: futures.append(pool.submit(send, i, intended)))
        deadline = time.perf_counter() + drain
        for f in futures:
            f.result(timeout=max(0.0, deadline - time.perf_counter()))
    except TimeoutError:
        tally.unanswered(sum(not f.done() for f in futures), drain)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return tally


async def _open_async(
    target: AsyncTarget, schedule: np.ndarray, *, warmup: float, duration: float, drain: float, slots: int
) -> _OpenTally:
    loop = asyncio.get_running_loop()
    async with target.async_workers(slots) as calls:
        free: asyncio.LifoQueue[Callable[[int], Awaitable[None]]] = asyncio.LifoQueue()
        for call in calls:
            free.put_nowait(call)  # last freed, first reused: a few warm connections rather than all of them
        tally = _OpenTally(len(schedule), warmup=warmup, duration=duration)
        tasks: list[asyncio.Task[None]] = []

        async def send(i: int, intended: int) -> None:
            call = await free.get()
            sent = time.perf_counter_ns()
            try:
                await call(i)
            except Exception as exc:
                tally.failed(exc, intended)
            else:
                tally.answered(i, intended, sent, time.perf_counter_ns())
            finally:
                free.put_nowait(call)

        def start(i: int, intended: int) -> None:
            tasks.append(loop.create_task(send(i, intended)))

        # The loop's own timers wake to the millisecond at best; a thread sleeps to the microsecond.
        hand_on = lambda i, intended: loop.call_soon_threadsafe(start, i, intended)  # noqa: E731
        # The dispatcher's hand-ons were queued before its end was, so every task exists when this returns.
        await loop.run_in_executor(None, _dispatch, schedule, tally.t_start, hand_on)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain)
            if pending:
                tally.unanswered(len(pending), drain)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
    return tally
