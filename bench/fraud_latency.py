"""One card authorization over gRPC, state update included: latency at concurrency 1 (and more).

Generates transactions (``engine.demo.transactions``; or reads ``--data FILE``, e.g. the Fraud Detection Handbook's
simulated transactions), trains ``fraud`` on them into ``build/bench-fraud``, starts the bundled Triton on free
ports, then sends fresh authorizations of the file's cards back to back: each has a new transaction id and a later
time than the card's last, so each is scored from the card's and terminal's history and recorded. Each worker owns
its cards, so its times never go backwards.

Two client paths: ``stub`` (requests serialised before the loop and sent through gRPC's own stub: a latency
runs from the send to the answer, as perf_analyzer's do) and ``tritonclient`` (``FraudClient.authorize``, what an
application in Python sees). Triton's statistics give the server's share. Beside them, the floor
(:mod:`bench.floor_model`: fraud's inputs read, constant outputs) through the stub client: the serving stack's own
share. At concurrency 1, Triton's perf_analyzer too (:func:`_perf_analyzer`), on the floor and on fraud, with fresh
authorizations as its input data. In-process (the scorer alone) for comparison.

    python -m bench.fraud_latency [--duration 10] [--concurrency 1,4] [--redis redis://HOST:PORT/DB] [--rounds N]
        [--data FILE --card C --time T --amount A --label L --terminal T --id I]

With ``--redis`` the same run measures twice: first with the state in the model's process, then with the state
in that Redis (as several servers would share it), so the two figures come from one machine at one time
(``--redis-only`` skips the first). ``--server-cpus 0`` runs Triton and its models on CPU 0 (``finscore serve
--cpus``): on a 2-core VM each hop of a request to a process on the other core waits for a wake-up there.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import numpy as np
import polars as pl
import tritonclient.grpc as grpcclient

from bench.floor import floor_repository
from bench.load import closed_loop
from bench.suite import _stats, server_breakdown
from bench.targets import _MODEL_INFER, _infer_request
from clients import FraudClient
from engine.demo.transactions import synthetic_transactions
from engine.errors import UsageError
from engine.families.fraud import FraudColumns, FraudScorer, canonical, train_fraud
from engine.families.fraud.redis_state import ENV_VAR, redacted_url
from engine.serving.repository import ModelRepository
from engine.serving.server import ServerPorts, TritonServer, parse_cpus
from engine.tables.io import read_table

__all__ = ["main"]

#: What the stub path asks for: FraudClient's outputs (the decision and the reasons as INT32 indices).
OUTPUTS = ["fraud_probability", "reason_index", "decision_code"]
DATATYPES = {
    "transaction_id": "BYTES",
    "card_id": "BYTES",
    "terminal_id": "BYTES",
    "amount": "FP64",
    "timestamp": "INT64",
}
#: Requests serialised ahead per worker and second of a point (more than one worker answers here at c=1).
_PREPARED_PER_S = 3000
#: Fresh authorizations given to perf_analyzer per second of a trial (it sends them in turn and must never wrap
#: around: an id sent twice is refused).
_PA_PER_S = 2500
COLUMNS = FraudColumns(
    card="card_id", time="timestamp", amount="amount", label="is_fraud", terminal="terminal_id", id="transaction_id"
)


class Authorizations:
    """Fresh authorizations for ``workers`` workers, each over its own cards, times moving forward."""

    def __init__(self, cards: list[str], terminals: list[str], start_us: int, *, workers: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.cards = [cards[k::workers] for k in range(workers)]
        self.terminals = terminals
        self.clock = itertools.count(start_us, 1_000_000)  # a second apart: windows keep moving
        self.ids = itertools.count()
        self.run = f"{time.time_ns():x}"

    def next(self, worker: int) -> dict[str, np.ndarray]:
        mine = self.cards[worker]
        return {
            "transaction_id": np.array([[f"b{self.run}-{next(self.ids)}".encode()]], dtype=object),
            "card_id": np.array([[mine[int(self.rng.integers(len(mine)))].encode()]], dtype=object),
            "terminal_id": np.array(
                [[self.terminals[int(self.rng.integers(len(self.terminals)))].encode()]], dtype=object
            ),
            "amount": np.array([[round(float(self.rng.gamma(2.0, 30.0)), 2)]]),
            "timestamp": np.array([[next(self.clock)]], dtype=np.int64),
        }


class _Target:
    """``client="stub"``: each worker's requests are serialised before the loop (``prepared`` of them; any more are
    built as they are sent), so a latency runs from the send to the answer, as perf_analyzer's do;
    ``"tritonclient"``: each request is built by ``FraudClient.authorize``, as an application's is."""

    name = "triton"
    batch = 1

    def __init__(
        self, url: str, auths: Authorizations, client: str, model: str = "fraud", *, prepared: int = 0
    ) -> None:
        self.url, self.auths, self.client, self.model = url, auths, client, model
        self.prepared = prepared
        self.channel = grpc.insecure_channel(url)
        self.infer = self.channel.unary_unary(_MODEL_INFER)
        self.workers = itertools.count()
        self.opened: list[Any] = []

    def _request(self, worker: int) -> bytes:
        return _infer_request(self.model, self.auths.next(worker), DATATYPES, OUTPUTS).SerializeToString()

    def worker(self) -> Callable[[int], None]:
        k = next(self.workers)
        if self.client == "tritonclient":
            fraud = FraudClient(self.url)
            self.opened.append(fraud)

            def call_client(i: int) -> None:
                fraud.authorize({n: a.ravel() for n, a in self.auths.next(k).items()})

            return call_client

        ready = iter([self._request(k) for _ in range(self.prepared)])

        def call_stub(i: int) -> None:
            self.infer(next(ready, None) or self._request(k), timeout=30)

        return call_stub

    def close(self) -> None:
        self.channel.close()
        for c in self.opened:
            c.close()


def _prepare(root: Path, cards: int, days: int) -> tuple[Path, list[str], list[str], int]:
    tx = synthetic_transactions(cards=cards, terminals=cards * 2, days=days, seed=7)
    data = root / "transactions.parquet"
    root.mkdir(parents=True, exist_ok=True)
    tx.write_parquet(data)
    repo = _fresh_repository(root)
    r = train_fraud(
        data, columns=COLUMNS, delay_us=86_400_000_000, train_days=days - 8, gap_days=1, test_days=7, repo=repo
    )
    print(f"trained fraud version {r.version} on {tx.height:,} generated transactions ({r.rounds} trees)")
    return r.path, *_cards_and_terminals(canonical(tx, COLUMNS))


def _prepare_file(
    root: Path, data: Path, columns: FraudColumns, train_start: str | None = None
) -> tuple[Path, list[str], list[str], int]:
    """Train on a transactions file (7 days from ``train_start``, else from its first day, a 7-day gap, 7 test
    days, labels 7 days late, as ``finscore train fraud`` does); authorizations then come for its cards and
    terminals."""
    repo = _fresh_repository(root)
    r = train_fraud(data, columns=columns, repo=repo, train_start=train_start)
    tx = canonical(read_table(data), columns, source=str(data))
    print(f"trained fraud version {r.version} on {data.name}: {tx.height:,} transactions ({r.rounds} trees)")
    return r.path, *_cards_and_terminals(tx)


def _fresh_repository(root: Path) -> ModelRepository:
    # A fresh repository: a live state left by an earlier run would hold these cards at later times.
    shutil.rmtree(root / "model_repo", ignore_errors=True)
    return ModelRepository(root / "model_repo")


def _cards_and_terminals(tx: pl.DataFrame) -> tuple[list[str], list[str], int]:
    """The cards and terminals of a canonical frame, and a time after its last transaction (µs)."""
    end = int(tx["time"].max()) + 1_000_000  # type: ignore[arg-type]
    return sorted(set(tx["card"].to_list())), sorted(set(tx["terminal"].to_list())), end


def _line(label: str, m: Any, server: dict[str, Any] | None = None) -> None:
    extra = ""
    if server:
        extra = "; server µs/request: " + ", ".join(
            f"{k} {v:.0f}" for k, v in server.items() if v is not None and k != "avg_batch"
        )
        extra += f", avg batch {server['avg_batch']:.2f}"
    print(
        f"  {label:<28} {m.throughput:8,.0f} auth/s  p50 {m.p50_ms:6.3f} ms  p90 {m.p90_ms:6.3f}  p99 {m.p99_ms:6.3f}"
        f"  p99.9 {m.p999_ms:6.3f}  errors {m.errors}{' (' + m.first_error + ')' if m.errors else ''}{extra}"
    )


def _summary(level: int, got: dict[tuple[str, str], list[Any]], floor: str) -> str:
    """Per client path, the median p50 and p99 over the rounds, and fraud's p50 against the floor's."""

    def median(run: tuple[str, str], field: str) -> float:
        return statistics.median(getattr(m, field) for m in got[run])

    rounds = len(got["stub", floor])
    paths = "; ".join(
        f"{client}{' (floor)' if model == floor else ''} p50 {median((client, model), 'p50_ms'):.3f} ms "
        f"p99 {median((client, model), 'p99_ms'):.3f} ms"
        for client, model in got
    )
    ratio = median(("stub", "fraud"), "p50_ms") / median(("stub", floor), "p50_ms")
    of = f"median of {rounds} rounds" if rounds > 1 else "1 round"
    return f"  c={level}, {of}: {paths}; fraud's p50 {ratio:.2f}x the floor's"


def _perf_analyzer(url: str, auths: Authorizations, floor: str, duration: float) -> None:
    """Triton's perf_analyzer at concurrency 1, on the floor and on fraud: fresh authorizations as its input data,
    sent in turn (one thread, so each card's times move forward), enough that it never sends one twice. It asks
    for every output (it names none), so fraud's reason names, decision text and features are answered too."""
    from bench import perf_analyzer

    entries = int(_PA_PER_S * duration * (perf_analyzer.RETRY_TRIALS + 2))
    fresh = [auths.next(0) for _ in range(entries)]
    pool = {name: np.concatenate([a[name] for a in fresh]) for name in DATATYPES}
    for model in (floor, "fraud"):
        label = "perf_analyzer, c=1" + (" (floor)" if model == floor else ", every output")
        try:
            (rec,) = perf_analyzer.run(url, model, pool, concurrency=[1], duration=duration, rows=entries)
        except perf_analyzer.PerfAnalyzerError as exc:
            print(f"  {label:<28} not measured: {exc}")
            continue
        server = ", ".join(f"{k} {v:.0f}" for k, v in rec["server"].items() if v is not None)
        print(
            f"  {label:<28} {rec['throughput']:8,.0f} auth/s  p50 {rec['p50_ms']:6.3f} ms  p90 {rec['p90_ms']:6.3f}"
            f"  p99 {rec['p99_ms']:6.3f}; server µs/request: {server}"
        )


def _in_process(version: Path, auths: Authorizations, duration: float, env: dict[str, str]) -> None:
    with mock.patch.dict(os.environ, env):  # the scorer reads where its state lives there, as the served model does
        scorer = FraudScorer.load(version)
    scorer.live_state = None  # a benchmark never writes the live snapshot
    gc.collect()
    gc.freeze()  # as the served model does after loading its state
    times = []
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        body = {n: a.ravel() for n, a in auths.next(0).items()}
        t0 = time.perf_counter_ns()
        x = scorer.features(scorer.validate(body))
        t1 = time.perf_counter_ns()
        scorer.score_features(x, outputs=OUTPUTS)
        times.append((t1 - t0, time.perf_counter_ns() - t1))
    gc.unfreeze()
    a = np.array(times) / 1e3
    print(
        f"  {'in-process (no transport)':<28} features+state p50 {np.median(a[:, 0]):.0f} µs "
        f"p99 {np.percentile(a[:, 0], 99):.0f} µs, "
        f"XGBoost (+TreeSHAP when flagged) p50 {np.median(a[:, 1]):.0f} µs, "
        f"total p99 {np.percentile(a.sum(axis=1), 99):.0f} µs"
    )


def _measure(
    version: Path, auths: Authorizations, levels: list[int], args: argparse.Namespace, url: str | None
) -> None:
    env = {ENV_VAR: url} if url else {}
    where = f"state in Redis at {redacted_url(url)}" if url else "state in the server process"
    pinned = f", Triton and its models on CPU {args.server_cpus}" if args.server_cpus else ""
    print(
        f"one authorization per request, {where}{pinned}, {args.duration:g} s per point after {args.warmup:g} s "
        "warm-up:"
    )
    repo = version.parent.parent
    with tempfile.TemporaryDirectory(prefix="finscore-floor-") as extra:
        floor = floor_repository(repo, "fraud", Path(extra))
        ports = ServerPorts.free()
        cpus = parse_cpus(args.server_cpus) if args.server_cpus else None
        with TritonServer(
            repo, ports=ports, models=["fraud", floor], env=env, more_repositories=[extra], cpus=cpus
        ) as server:
            stats = grpcclient.InferenceServerClient(server.grpc_url)
            runs = [("stub", floor), ("stub", "fraud"), ("tritonclient", "fraud")]
            for level in levels:
                got: dict[tuple[str, str], list[Any]] = {run: [] for run in runs}
                prepared = int((args.warmup + args.duration) * _PREPARED_PER_S / level)
                for k in range(args.rounds):  # the order turns each round: a drift of the machine weighs on all
                    for client, model in runs if k % 2 == 0 else runs[::-1]:
                        target = _Target(server.grpc_url, auths, client, model, prepared=prepared)
                        before = _stats(stats, model)
                        m = closed_loop(target, concurrency=level, duration=args.duration, warmup=args.warmup)
                        label = f"gRPC {client}, c={level}" + (" (floor)" if model == floor else "")
                        _line(label + (f", round {k + 1}" if args.rounds > 1 else ""), m, server_breakdown(
                            before, _stats(stats, model)
                        ))  # fmt: skip
                        got[client, model].append(m)
                        target.close()
                print(_summary(level, got, floor))
                if level == 1 and args.perf_analyzer:
                    _perf_analyzer(server.grpc_url, auths, floor, args.duration)
            stats.close()
    _in_process(version, auths, min(args.duration, 5.0), env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fraud_latency", description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per point (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default 2)")
    ap.add_argument("--concurrency", default="1,4", help="comma-separated concurrency levels (default 1,4)")
    ap.add_argument(
        "--rounds", type=int, default=1,
        help="rounds of the floor and both client paths at each level, the order turned each round; the summary "
        "gives their medians (default 1)",
    )  # fmt: skip
    ap.add_argument(
        "--data", type=Path, metavar="FILE",
        help="train on this transactions file (Parquet or CSV) and authorize its cards and terminals, instead of "
        "generated ones; its columns as the flags below name them",
    )  # fmt: skip
    for flag, default in (
        ("card", COLUMNS.card), ("time", COLUMNS.time), ("amount", COLUMNS.amount), ("label", COLUMNS.label),
        ("terminal", COLUMNS.terminal), ("id", COLUMNS.id),
    ):  # fmt: skip
        ap.add_argument(f"--{flag}", default=default, help=f"with --data: its {flag} column (default {default})")
    ap.add_argument(
        "--train-start", metavar="DAY",
        help="with --data: the first training day (YYYY-MM-DD), as `finscore train fraud --train-start`; the "
        "Fraud Detection Handbook's 183 days: 2018-07-25 (its first days have no history for the windows)",
    )  # fmt: skip
    ap.add_argument("--cards", type=int, default=2000, help="generated cards (default 2000)")
    ap.add_argument("--days", type=int, default=30, help="generated days of history (default 30)")
    ap.add_argument(
        "--root", type=Path, default=Path("build/bench-fraud"), help="work folder (default build/bench-fraud)"
    )
    ap.add_argument(
        "--redis", metavar="URL", help="also measure with the state in this Redis, after the state in the process"
    )
    ap.add_argument("--redis-only", action="store_true", help="with --redis, skip the state in the process")
    ap.add_argument(
        "--server-cpus", metavar="CPUS",
        help="run Triton and its models on these CPUs (as `finscore serve --cpus`, e.g. 0); with a local Redis, "
        "start it on the same CPUs (`taskset -c 0 redis-server ...`)",
    )  # fmt: skip
    ap.add_argument(
        "--no-perf-analyzer", dest="perf_analyzer", action="store_false",
        help="skip Triton's perf_analyzer at concurrency 1 (run by default beside the Python client)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.redis_only and not args.redis:
        ap.error("--redis-only needs --redis URL")
    if args.server_cpus:
        try:
            parse_cpus(args.server_cpus)
        except UsageError as exc:
            ap.error(f"--server-cpus: {exc}")
    if args.train_start and args.data is None:
        ap.error("--train-start needs --data FILE")
    os.environ.pop(ENV_VAR, None)  # where the state lives is this run's choice, not the caller's environment
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.data is None:
        version, cards, terminals, start = _prepare(args.root, args.cards, args.days)
    else:
        columns = FraudColumns(
            card=args.card, time=args.time, amount=args.amount, label=args.label, terminal=args.terminal, id=args.id
        )
        version, cards, terminals, start = _prepare_file(args.root, args.data, columns, args.train_start)
    auths = Authorizations(cards, terminals, start, workers=max(levels))
    urls = ([] if args.redis_only else [None]) + ([args.redis] if args.redis else [])
    for url in urls:
        _measure(version, auths, levels, args, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
