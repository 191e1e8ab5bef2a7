"""A model's python-backend stub killed under load: how many requests fail, and how long until answers come back.

``python -m bench.heal [--repo DIR --data FILE] [--kills 3] [--concurrency 8]`` trains churn on generated customers
(unless ``--repo`` already holds it), starts the bundled server (with its stub watch), runs a closed loop of
single-row requests from ``--concurrency`` threads, and ``--kills`` times kills the churn stub with SIGKILL, waiting
for the watch to reload the model before the next kill. Run twice: clients that retry what a server heals (the
default, ``FINSCORE_RETRY_FOR``), and clients that never retry (``--retry-for 0``), so the two sides of the
recovery show: the server's (the time until the model answers again) and the client's (failed requests).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

from clients import ModelClient
from engine.errors import FinscoreError
from engine.serving.server import ServerPorts, TritonServer
from engine.serving.watch import stubs_of


def _trained(repo: Path | None, data: Path | None) -> tuple[Path, Path]:
    if repo is not None and data is not None:
        return repo, data
    from engine.demo.tables import churn_customers
    from engine.families.churn import train_churn
    from engine.serving.repository import ModelRepository

    folder = Path(tempfile.mkdtemp(prefix="finscore-heal-"))
    data = folder / "customers.parquet"
    churn_customers(5000, seed=3).write_parquet(data)
    train_churn(data, label="churned", id_column="customer_id", repo=ModelRepository(folder / "repo"))
    return folder / "repo", data


def run(repo: Path, data: Path, *, kills: int, concurrency: int, retry_for: float) -> None:
    rows = pl.read_parquet(data).drop("churned", strict=False).head(256)
    with TritonServer(repo, ports=ServerPorts.free(), models=["churn"]) as server:
        assert server.process is not None and server.watch is not None
        stop = threading.Event()
        events: list[tuple[float, bool, float]] = []  # (finished at, ok, seconds it took)
        lock = threading.Lock()

        def loop(worker: int) -> None:
            with ModelClient(server.grpc_url, "churn", retry_for=retry_for) as client:
                i = worker
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        client.infer(rows[i % rows.height : i % rows.height + 1])
                        ok = True
                    except FinscoreError:
                        ok = False
                    now = time.monotonic()
                    with lock:
                        events.append((now, ok, now - started))
                    i += concurrency

        threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in range(concurrency)]
        for t in threads:
            t.start()
        time.sleep(3)
        for kill in range(1, kills + 1):
            stub = next(s for s in stubs_of(server.process.pid) if s.model == "churn")
            before = len(server.watch.reloads)
            killed_at = time.monotonic()
            os.kill(stub.pid, signal.SIGKILL)
            while len(server.watch.reloads) == before and time.monotonic() - killed_at < 120:
                time.sleep(0.05)
            time.sleep(3)
            with lock:
                after = [(t, ok, took) for t, ok, took in events if t >= killed_at]
            failed = sum(1 for _, ok, _ in after if not ok)
            back = next((t for t, ok, took in after if ok and t - took >= killed_at), None)
            slowest = max((took for _, _, took in after), default=0.0)
            reload_s = server.watch.reloads[-1][1] if len(server.watch.reloads) > before else float("nan")
            print(
                f"  kill {kill}: {failed} of {len(after)} requests failed; first request sent after the kill answered "
                f"{(back - killed_at) if back else float('nan'):.1f} s after it; the watch's reload took "
                f"{reload_s:.1f} s; slowest request {slowest:.1f} s",
                flush=True,
            )
        stop.set()
        for t in threads:
            t.join(timeout=60)
        with lock:
            total = len(events)
            ok_count = sum(1 for _, ok, _ in events if ok)
        p50 = np.median([took for _, ok, took in events if ok]) * 1e3 if ok_count else float("nan")
        print(f"  in all: {total} requests, {total - ok_count} failed, p50 of the answered {p50:.2f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.heal", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="a model repository holding a trained churn (with --data)")
    parser.add_argument("--data", type=Path, help="the customers table to send rows from (with --repo)")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--retry-for", type=float, help="only this client setting (default: both 30 and 0)")
    args = parser.parse_args(argv)
    repo, data = _trained(args.repo, args.data)
    settings = [args.retry_for] if args.retry_for is not None else [30.0, 0.0]
    for retry_for in settings:
        print(f"churn stub killed {args.kills} times under c={args.concurrency}, clients retrying for {retry_for:g} s:")
        run(repo, data, kills=args.kills, concurrency=args.concurrency, retry_for=retry_for)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
