"""Round-trip time of bulk requests to the served ``churn`` model: plain gRPC bytes against system shared memory.

``python -m bench.transport`` generates demo customers, trains ``churn`` into a temporary model repository (or
uses ``--repo DIR``), starts the bundled Triton server on free ports, and times ``infer_arrays`` for batches of
256, 1024 and 4096 rows (the model's largest batch) through :class:`clients.ModelClient` and
:class:`clients.SharedMemoryModelClient`, alternating the two request by request so both see the same machine.
The arrays are encoded once beforehand: the figures are transport plus the model's own work, not encoding.
Figures are printed, never asserted on.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from bench.report import machine_facts, machine_line, save_figures

__all__ = ["Row", "churn_server", "main", "run"]

MODEL = "churn"
DEFAULT_ROWS = (256, 1024, 4096)


@dataclass(frozen=True)
class Row:
    """The figures for one batch size.

    Attributes
    ----------
    rows
        Rows per request.
    request_mb, response_mb
        Megabytes (10**6 bytes) of input tensors sent and of output tensors returned per request, as on the wire
        (BYTES tensors serialized).
    requests
        Measured requests per transport.
    grpc_p50_ms, shm_p50_ms
        Median round trip of ``infer_arrays``, in milliseconds, over plain gRPC and through shared memory.
    grpc_transport_ms, shm_transport_ms
        Median of (round trip - Triton's compute for that request: input, infer, output), in milliseconds: what
        the client, the socket and Triton's request handling add, the part a transport can change.
    """

    rows: int
    request_mb: float
    response_mb: float
    requests: int
    grpc_p50_ms: float
    shm_p50_ms: float
    grpc_transport_ms: float
    shm_transport_ms: float

    @property
    def ratio(self) -> float:
        """How many times faster shared memory was (gRPC p50 / shm p50)."""
        return self.grpc_p50_ms / self.shm_p50_ms if self.shm_p50_ms else float("nan")

    @property
    def transport_ratio(self) -> float:
        """The same for the transport's own part (gRPC / shm)."""
        return self.grpc_transport_ms / self.shm_transport_ms if self.shm_transport_ms > 0 else float("nan")


@contextmanager
def churn_server(work: Path, *, repo: Path | None = None, customers: int = 5000) -> Iterator[tuple[Any, Any]]:
    """The bundled Triton serving ``churn`` on free ports, with the demo customers it was trained on.

    Parameters
    ----------
    work
        A scratch folder: the demo data, the model repository (unless ``repo``) and the server's log go there.
    repo
        An already trained model repository; by default ``churn`` is trained into ``work``.
    customers
        How many demo customers to generate (training data, and rows for requests).

    Yields
    ------
    tuple
        The started :class:`engine.serving.server.TritonServer` and the customers as a Polars DataFrame.
    """
    from engine.demo.tables import CHURN_ID, CHURN_LABEL, churn_customers
    from engine.families.churn import train_churn
    from engine.serving.repository import ModelRepository
    from engine.serving.server import ServerPorts, TritonServer
    from engine.tables.io import write_table

    frame = churn_customers(customers)
    if repo is None:
        repository = ModelRepository(work / "model_repo")
        data = write_table(frame, work / "customers.parquet")
        trained = train_churn(data, label=CHURN_LABEL, id_column=CHURN_ID, repo=repository)
        print(f"trained churn ({trained.rounds} trees, {trained.seconds:.1f} s) into {trained.path}")
    else:
        repository = ModelRepository(repo)
        print(f"using {repository.latest(MODEL)}")
    with TritonServer(repository, ports=ServerPorts.free(), models=[MODEL], log_path=work / "triton.log") as server:
        yield server, frame


def _wire_bytes(arrays: dict[str, np.ndarray]) -> int:
    from tritonclient.utils import serialize_byte_tensor

    total = 0
    for arr in arrays.values():
        total += len(serialize_byte_tensor(arr).item()) if arr.dtype == object else arr.nbytes
    return total


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _server_compute(raw: grpcclient.InferenceServerClient) -> tuple[int, int]:
    """Triton's ``(requests, nanoseconds)`` of compute (input, infer, output) for the model, over its versions."""
    requests = ns = 0
    for version in raw.get_inference_statistics(model_name=MODEL).model_stats:
        stats = version.inference_stats
        requests += stats.compute_infer.count
        ns += stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns
    return requests, ns


def _measure(
    clients: dict[str, Any],
    arrays: dict[str, np.ndarray],
    raw: grpcclient.InferenceServerClient,
    *,
    warmup: int,
    repeats: int,
) -> dict[str, tuple[float, float]]:
    """Per transport, the median round trip and the median of (round trip - Triton's compute for that request),
    in milliseconds. The transports take turns going first, request by request; Triton's statistics are read
    between requests, outside the timed span."""
    names = list(clients)
    rounds: dict[str, list[int]] = {name: [] for name in names}
    rest: dict[str, list[int]] = {name: [] for name in names}
    for i in range(warmup + repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            before = _server_compute(raw)
            t0 = time.perf_counter_ns()
            clients[name].infer_arrays(arrays)
            elapsed = time.perf_counter_ns() - t0
            after = _server_compute(raw)
            if i >= warmup:
                rounds[name].append(elapsed)
                rest[name].append(elapsed - (after[1] - before[1]))
    return {name: (float(np.median(rounds[name])) / 1e6, float(np.median(rest[name])) / 1e6) for name in names}


def run(*, rows: list[int], repeats: int = 30, warmup: int = 3, repo: Path | None = None) -> dict[str, Any]:
    """Train (unless ``repo`` is given), serve, and time both transports at each batch size.

    Parameters
    ----------
    rows
        Batch sizes, each at most the model's ``max_batch_size`` (4096) and the 5,000 demo customers.
    repeats, warmup
        Requests measured, and requests sent first without measuring, per transport and batch size.
    repo
        An already trained model repository; by default a new one is trained in a temporary folder.

    Returns
    -------
    dict
        ``machine`` (cores, CPU, load, versions), ``settings`` and ``results`` (one :class:`Row` each).
    """
    from clients import ModelClient, SharedMemoryModelClient, encode_inputs

    load_before = os.getloadavg()[0]
    results: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="finscore-bench-") as tmp, churn_server(Path(tmp), repo=repo) as served:
        server, customers = served
        with (
            ModelClient(server.grpc_url, MODEL) as plain,
            SharedMemoryModelClient(server.grpc_url, MODEL) as shared,
            grpcclient.InferenceServerClient(url=server.grpc_url) as raw,
        ):
            server_version = raw.get_server_metadata().version
            for n in rows:
                arrays = encode_inputs(customers.head(n), plain.inputs, model=MODEL)
                want = plain.infer_arrays(arrays)
                if not _same(shared.infer_arrays(arrays), want):
                    print(f"warning: at {n} rows the shared-memory outputs differ from gRPC's")
                print(f"measuring {n} rows ({warmup} warm-up + {repeats} requests per transport) ...", flush=True)
                p50 = _measure({"grpc": plain, "shm": shared}, arrays, raw, warmup=warmup, repeats=repeats)
                mb_in, mb_out = _wire_bytes(arrays) / 1e6, _wire_bytes(want) / 1e6
                (grpc_ms, grpc_rest), (shm_ms, shm_rest) = p50["grpc"], p50["shm"]
                results.append(Row(n, mb_in, mb_out, repeats, grpc_ms, shm_ms, grpc_rest, shm_rest))
    machine = machine_facts(
        load_before,
        tritonserver=server_version,
        tritonclient=dist_version("tritonclient"),
    )
    settings = {"rows": rows, "repeats": repeats, "warmup": warmup}
    return {
        "machine": machine,
        "settings": settings,
        "results": [asdict(r) | {"ratio": r.ratio, "transport_ratio": r.transport_ratio} for r in results],
    }


def _table(results: list[Row]) -> str:
    header = (
        "rows",
        "MB/request",
        "MB/response",
        "p50 ms gRPC",
        "p50 ms shm",
        "gRPC/shm",
        "transport ms gRPC",
        "transport ms shm",
        "gRPC/shm",
    )
    lines = [
        (
            f"{r.rows:,}",
            f"{r.request_mb:.3f}",
            f"{r.response_mb:.3f}",
            f"{r.grpc_p50_ms:.2f}",
            f"{r.shm_p50_ms:.2f}",
            f"{r.ratio:.2f}x",
            f"{r.grpc_transport_ms:.2f}",
            f"{r.shm_transport_ms:.2f}",
            f"{r.transport_ratio:.2f}x",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True))

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in lines)])


def main(argv: list[str] | None = None) -> None:
    """Command line: measure, print the table, optionally write the figures as JSON.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``): ``[--rows 256,1024,4096] [--repeats 30] [--warmup 3] [--repo DIR]
        [--json FILE]``.
    """
    from engine.errors import FinscoreError

    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", default=",".join(map(str, DEFAULT_ROWS)), help="comma-separated batch sizes (default 256,1024,4096)"
    )
    parser.add_argument("--repeats", type=int, default=30, help="requests measured per transport and size (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="requests sent first, not measured (default 3)")
    parser.add_argument("--repo", type=Path, help="an already trained model repository (default: train one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        sizes = [int(x) for x in args.rows.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--rows must be comma-separated integers, got {args.rows!r}")
    if not sizes or min(sizes) < 1 or max(sizes) > 4096 or args.repeats < 1 or args.warmup < 0:
        parser.error("--rows must lie in 1..4096, --repeats must be positive and --warmup not negative")
    try:
        figures = run(rows=sizes, repeats=args.repeats, warmup=args.warmup, repo=args.repo)
    except FinscoreError as exc:  # e.g. an untrained --repo, or a server that cannot map shared memory
        raise SystemExit(f"bench.transport: {exc}") from None

    results = [Row(**{k: v for k, v in r.items() if not k.endswith("ratio")}) for r in figures["results"]]
    print()
    print(_table(results))
    print("transport ms: p50 of (round trip - Triton's compute input/infer/output for that request)")
    m = figures["machine"]
    print(machine_line(m))
    save_figures(figures, args.json)


if __name__ == "__main__":
    main()
