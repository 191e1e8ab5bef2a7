"""Batch-1 latency and throughput of the served ``churn`` model over gRPC, next to in-process predict.

``python -m bench.latency`` (``make bench``) generates demo customers, trains ``churn`` into a temporary
model repository (or uses ``--repo DIR``), starts the bundled Triton server on free ports and drives it with a
closed loop of batch-1 requests from Python ``tritonclient`` at each concurrency (one thread, one gRPC client
each). Triton's own statistics give the average batch its dynamic batcher executed. The same rows are then
scored in this process with :class:`engine.churn.ChurnScorer`, single-threaded. Figures are printed, never
asserted on.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from bench.report import machine_facts, machine_line, save_figures

__all__ = ["Result", "main", "run"]

MODEL = "churn"
Rows = list[dict[str, np.ndarray]]


@dataclass(frozen=True)
class Result:
    """The figures of one measured path.

    Attributes
    ----------
    path
        ``"grpc c=N"`` (a closed loop of N concurrent gRPC clients) or ``"in-process"``.
    requests, errors, seconds
        Requests answered and requests failed inside the measured window, and the window's length.
    rps
        Answered requests (one row each) per second of the window.
    p50_ms, p90_ms, p99_ms
        Latency percentiles of the answered requests, in milliseconds (NaN if none was answered).
    avg_server_batch
        Rows per model execution in Triton over the window (dynamic batching); ``None`` in-process.
    """

    path: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    avg_server_batch: float | None = None


def _result(path: str, latencies_ns: list[int], *, errors: int, seconds: float, batch: float | None) -> Result:
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99]) if len(ms) else (np.nan, np.nan, np.nan)
    return Result(path, len(ms), errors, seconds, len(ms) / seconds, float(p50), float(p90), float(p99), batch)


def _request(arrays: dict[str, np.ndarray], datatypes: dict[str, str], outputs: list[str]) -> tuple[list, list]:
    """Ready-made ``InferInput`` objects (datatypes as the model declares them) and requested outputs."""
    inputs = []
    for name, arr in arrays.items():
        tensor = grpcclient.InferInput(name, list(arr.shape), datatypes[name])
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    return inputs, [grpcclient.InferRequestedOutput(name) for name in outputs]


def _server_counts(stats_client: grpcclient.InferenceServerClient) -> tuple[int, int]:
    """Triton's ``(inference_count, execution_count)`` for the model, summed over its versions."""
    stats = stats_client.get_inference_statistics(model_name=MODEL).model_stats
    return sum(s.inference_count for s in stats), sum(s.execution_count for s in stats)


def _grpc_level(
    url: str, pool: Rows, *, io: tuple[dict[str, str], list[str]], concurrency: int, warmup: float, duration: float
) -> Result:
    """A closed loop: each thread sends its next row as soon as the previous one is answered.

    Parameters
    ----------
    url, pool
        Triton's gRPC address; pre-encoded batch-1 requests (``{input: array [1, 1]}``) every thread cycles through.
    io
        The model's input datatypes by name and its output names, from its metadata.
    concurrency
        Threads, each with its own ``InferenceServerClient`` and its own ready-made ``InferInput`` objects.
    warmup, duration
        Seconds run before measuring, then seconds measured (``time.perf_counter_ns`` around ``infer``).
    """
    clients = [grpcclient.InferenceServerClient(url=url) for _ in range(concurrency)]
    requests = [[_request(arrays, *io) for arrays in pool] for _ in range(concurrency)]
    latencies: list[list[int]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    first_error: list[str] = []
    measure_from = time.perf_counter_ns() + int(warmup * 1e9)
    end = measure_from + int(duration * 1e9)

    def work(k: int) -> None:
        client, mine, lat = clients[k], requests[k], latencies[k]
        i = k * len(pool) // concurrency  # threads start at different rows
        while (t0 := time.perf_counter_ns()) < end:
            inputs, wanted = mine[i % len(mine)]
            i += 1
            try:
                client.infer(MODEL, inputs, outputs=wanted)
            except Exception as exc:  # InferenceServerException or anything else: counted, not fatal
                if t0 >= measure_from:
                    errors[k] += 1
                    first_error[:] = first_error or [str(exc)]
                continue
            t1 = time.perf_counter_ns()
            if t0 >= measure_from and t1 <= end:
                lat.append(t1 - t0)

    with grpcclient.InferenceServerClient(url=url) as stats_client:
        threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(concurrency)]
        for t in threads:
            t.start()
        time.sleep(max(0.0, (measure_from - time.perf_counter_ns()) / 1e9))
        inferences0, executions0 = _server_counts(stats_client)
        time.sleep(max(0.0, (end - time.perf_counter_ns()) / 1e9))
        inferences1, executions1 = _server_counts(stats_client)
        for t in threads:
            t.join()
    for client in clients:
        client.close()
    if first_error:
        print(f"grpc c={concurrency}: first error: {first_error[0]}")
    executions = executions1 - executions0
    batch = (inferences1 - inferences0) / executions if executions else None
    merged = [x for lat in latencies for x in lat]
    return _result(f"grpc c={concurrency}", merged, errors=sum(errors), seconds=duration, batch=batch)


def _in_process(scorer: Any, pool: Rows, *, warmup: float, duration: float) -> Result:
    """``scorer.score`` on the same batch-1 arrays, one after another in this thread.

    Parameters
    ----------
    scorer, pool
        A loaded :class:`engine.churn.ChurnScorer` (what each Triton instance runs); the requests to cycle through.
    warmup, duration
        Seconds run before measuring, then seconds measured.
    """
    latencies: list[int] = []
    errors = i = 0
    measure_from = time.perf_counter_ns() + int(warmup * 1e9)
    end = measure_from + int(duration * 1e9)
    while (t0 := time.perf_counter_ns()) < end:
        try:
            scorer.score(pool[i % len(pool)])
        except Exception:  # counted, like a failed request
            errors += int(t0 >= measure_from)
        else:
            t1 = time.perf_counter_ns()
            if t0 >= measure_from and t1 <= end:
                latencies.append(t1 - t0)
        i += 1
    return _result("in-process", latencies, errors=errors, seconds=duration, batch=None)


def _table(results: list[Result]) -> str:
    header = ("path", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "avg server batch")
    rows = [
        (r.path, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", str(r.errors))
        + ("-" if r.avg_server_batch is None else f"{r.avg_server_batch:.2f}",)
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)])


def run(
    *, concurrency: list[int], duration: float = 10.0, warmup: float = 2.0, rows: int = 256, repo: Path | None = None
) -> dict[str, Any]:
    """Train (unless ``repo`` is given), serve, and measure every path.

    Parameters
    ----------
    concurrency
        The closed-loop concurrency levels for gRPC, one thread and client per unit.
    duration, warmup
        Seconds measured, and seconds run first without measuring, for each level and for in-process predict.
    rows
        How many distinct customer rows are pre-encoded and cycled through.
    repo
        An already trained model repository; by default a new one is trained in a temporary folder.

    Returns
    -------
    dict
        ``machine`` (cores, CPU, load, versions), ``settings`` and ``results`` (one :class:`Result` each).
    """
    from clients import ModelClient, encode_inputs
    from engine.churn import ChurnScorer, train_churn
    from engine.demo_data import CHURN_ID, CHURN_LABEL, churn_customers
    from engine.io import write_table
    from engine.repo import ModelRepository
    from engine.server import ServerPorts, TritonServer

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="finscore-bench-") as tmp:
        work = Path(tmp)
        customers = churn_customers(5000)
        if repo is None:
            repository = ModelRepository(work / "model_repo")
            data = write_table(customers, work / "customers.parquet")
            trained = train_churn(data, label=CHURN_LABEL, id_column=CHURN_ID, repo=repository)
            version_dir = trained.path
            print(f"trained churn ({trained.rounds} trees, {trained.seconds:.1f} s) into {version_dir}")
        else:
            repository = ModelRepository(repo)
            version_dir = repository.latest(MODEL)
            print(f"using {version_dir}")
        frame = customers.sample(min(rows, customers.height), seed=0)
        ports = ServerPorts.free()
        results: list[Result] = []
        with TritonServer(repository, ports=ports, models=[MODEL], log_path=work / "triton.log") as server:
            with ModelClient(server.grpc_url, MODEL) as client:
                pool = [encode_inputs(frame.slice(i, 1), client.inputs, model=MODEL) for i in range(frame.height)]
                io = ({spec.name: spec.datatype for spec in client.inputs}, client.outputs)
                served = client.infer_arrays(pool[0])["churn_probability"]
            with grpcclient.InferenceServerClient(url=server.grpc_url) as raw:
                server_version = raw.get_server_metadata().version
            measure = functools.partial(_grpc_level, server.grpc_url, pool, io=io, warmup=warmup, duration=duration)
            for level in concurrency:
                print(f"measuring grpc c={level} ({warmup:g} s warm-up + {duration:g} s) ...", flush=True)
                results.append(measure(concurrency=level))
        print(f"measuring in-process ({warmup:g} s warm-up + {duration:g} s) ...", flush=True)
        scorer = ChurnScorer.load(version_dir)
        local = scorer.score(pool[0])["churn_probability"]
        if not np.allclose(served.reshape(-1), local.reshape(-1), atol=1e-6):
            print(f"warning: served probability {served.ravel()} differs from in-process {local.ravel()}")
        results.append(_in_process(scorer, pool, warmup=warmup, duration=duration))
    machine = machine_facts(
        load_before,
        tritonserver=server_version,
        tritonclient=dist_version("tritonclient"),
    )
    settings = {"concurrency": concurrency, "duration_s": duration, "warmup_s": warmup, "pool_rows": len(pool)}
    return {"machine": machine, "settings": settings, "results": [asdict(r) for r in results]}


def main(argv: list[str] | None = None) -> None:
    """Command line: measure, print the table, optionally write the figures as JSON.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``): ``[--concurrency 1,4,16] [--duration 10] [--warmup 2] [--pool 256]
        [--repo DIR] [--json FILE]``.
    """
    from engine.errors import FinscoreError

    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per path (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per path (default 2)")
    parser.add_argument("--pool", type=int, default=256, help="distinct rows cycled through (default 256)")
    parser.add_argument("--repo", type=Path, help="an already trained model repository (default: train one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not levels or min(levels) < 1 or args.duration <= 0 or args.warmup < 0 or args.pool < 1:
        parser.error("concurrency levels, --duration and --pool must be positive and --warmup not negative")
    try:
        figures = run(concurrency=levels, duration=args.duration, warmup=args.warmup, rows=args.pool, repo=args.repo)
    except FinscoreError as exc:  # e.g. an untrained --repo, or one trained on other columns
        raise SystemExit(f"bench.latency: {exc}") from None

    results = [Result(**r) for r in figures["results"]]
    print()
    print(_table(results))
    grpc = [r for r in results if r.path.startswith("grpc")]
    if len(grpc) > 1 and grpc[0].rps:
        print(f"throughput {grpc[-1].path} / {grpc[0].path}: {grpc[-1].rps / grpc[0].rps:.2f}x")
    m = figures["machine"]
    print(machine_line(m))
    save_figures(figures, args.json)


if __name__ == "__main__":
    main()
