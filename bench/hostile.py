"""A hostile-input campaign against a running server: every request gets an answer, none crashes or hangs it.

Seeded mutations of valid requests for each served model: inputs renamed, missing or added, wrong datatypes
and shapes, empty and oversized batches, NaN and infinity, invalid UTF-8 and megabyte strings in BYTES
tensors, batch sizes that differ between inputs, byte contents of the wrong length. Valid requests are mixed
in (one in four) from several threads at once, so they share dynamic batches with the hostile ones; each must
still be answered with a score. Memory is the resident size of the server and its backend processes, read
after a warm-up and at the end.

    python -m bench.hostile [--requests 10000] [--warmup 2000] [--threads 8] [--seed 0]

It trains churn, threat and fraud on generated data into ``build/hostile`` and starts its own server.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

__all__ = ["Campaign", "ModelTarget", "process_tree_rss", "run_campaign"]

Arrays = dict[str, np.ndarray]
_DTYPES = {"BYTES": object, "FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32}
_WRONG = {"BYTES": "FP32", "FP64": "INT32", "FP32": "BYTES", "INT64": "FP64", "INT32": "BYTES"}
MUTATIONS = (
    "rename",
    "missing",
    "extra",
    "dtype",
    "shape",
    "flat",
    "empty",
    "oversized",
    "nan",
    "inf",
    "utf8",
    "giant",
    "mismatched",
    "short_bytes",
)


@dataclass
class ModelTarget:
    """One served model: its name, max batch size, input datatypes, and a source of valid requests."""

    name: str
    max_batch: int
    datatypes: dict[str, str]
    valid: Callable[[random.Random], Arrays]  # a fresh valid request (fraud's must be new authorizations)


@dataclass
class Campaign:
    sent: int = 0
    answered: Counter[str] = field(default_factory=Counter)  # "ok", or the error status of a hostile request
    by_mutation: Counter[str] = field(default_factory=Counter)
    hangs: int = 0
    good_failed: list[str] = field(default_factory=list)
    hostile_scored: Counter[str] = field(default_factory=Counter)  # hostile requests the model scored anyway
    rss_before: int = 0
    rss_after: int = 0
    seconds: float = 0.0
    alive: bool = True

    @property
    def rss_growth(self) -> float:
        return (self.rss_after - self.rss_before) / self.rss_before if self.rss_before else 0.0

    def line(self) -> str:
        errors = sum(v for k, v in self.answered.items() if k != "ok")
        return (
            f"{self.sent:,} requests in {self.seconds:.1f} s: {errors:,} refused with an error, "
            f"{self.answered['ok']:,} scored, {self.hangs} hangs, {len(self.good_failed)} valid requests failed, "
            f"server {'alive' if self.alive else 'DEAD'}; memory {self.rss_before / 2**20:.0f} -> "
            f"{self.rss_after / 2**20:.0f} MiB ({self.rss_growth:+.1%})"
        )


def process_tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _tensor(name: str, arr: np.ndarray, datatype: str) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, list(arr.shape), datatype)
    t.set_data_from_numpy(arr)
    return t


def _inputs(arrays: Arrays, datatypes: dict[str, str]) -> list[grpcclient.InferInput]:
    return [_tensor(k, v, datatypes.get(k, "BYTES" if v.dtype == object else "FP32")) for k, v in arrays.items()]


def hostile(target: ModelTarget, kind: str, rng: random.Random) -> list[grpcclient.InferInput]:
    """A request of ``target`` broken in the way ``kind`` names."""
    arrays = target.valid(rng)
    types = dict(target.datatypes)
    names = [n for n in arrays if n in types]
    victim = rng.choice(names)
    dtype = types[victim]
    n = len(arrays[victim])
    floats = [k for k in names if types[k] in ("FP64", "FP32")]
    texts = [k for k in names if types[k] == "BYTES"]
    if kind == "rename":
        arrays[victim + "_x"] = arrays.pop(victim)
        types[victim + "_x"] = dtype
    elif kind == "missing":
        arrays.pop(victim)
    elif kind == "extra":
        arrays["not_an_input"] = np.ones((n, 1), dtype=np.float32)
        types["not_an_input"] = "FP32"
    elif kind == "dtype":
        wrong = _WRONG[dtype]
        arrays[victim] = np.ones(arrays[victim].shape, dtype=_DTYPES[wrong])
        if wrong == "BYTES":
            arrays[victim] = np.full(arrays[victim].shape, b"1", dtype=object)
        types[victim] = wrong
    elif kind == "shape":
        arrays[victim] = np.repeat(arrays[victim], 2, axis=1)
    elif kind == "flat":
        arrays[victim] = arrays[victim].reshape(-1)
    elif kind == "empty":
        arrays = {k: v[:0] for k, v in arrays.items()}
    elif kind == "oversized":
        reps = target.max_batch // n + 1
        arrays = {k: np.concatenate([v] * reps)[: target.max_batch + 1] for k, v in arrays.items()}
    elif kind in ("nan", "inf") and floats:
        col = rng.choice(floats)
        arrays[col] = arrays[col].copy()
        arrays[col][rng.randrange(n)] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf])
    elif kind == "utf8" and texts:
        col = rng.choice(texts)
        arrays[col] = arrays[col].copy()
        arrays[col][rng.randrange(n)] = b"\xff\xfe\xc3(" + bytes([rng.randrange(256)])
    elif kind == "giant" and texts:
        col = rng.choice(texts)
        arrays[col] = arrays[col].copy()
        arrays[col][rng.randrange(n)] = b"A" * (1 << 20)
    elif kind == "mismatched" and len(names) > 1:
        arrays[victim] = np.concatenate([arrays[victim], arrays[victim][:1]])
    elif kind == "short_bytes":
        tensors = _inputs(arrays, types)
        tensors[0]._raw_content = b"\x00\x01\x02"  # bytes that fit no tensor of this shape and type
        return tensors
    return _inputs(arrays, types)


def run_campaign(
    url: str,
    targets: list[ModelTarget],
    *,
    requests: int,
    threads: int = 8,
    seed: int = 0,
    server_pid: int | None = None,
    timeout: float = 60.0,
    warmup: int = 100,
) -> Campaign:
    """Send ``requests`` requests (three in four hostile) from ``threads`` threads; count what came back."""
    result = Campaign()
    lock = threading.Lock()
    local = threading.local()

    def client() -> grpcclient.InferenceServerClient:
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(url)
        return local.client

    def one(i: int) -> None:
        rng = random.Random(seed * 1_000_003 + i)
        target = targets[i % len(targets)]
        good = rng.random() < 0.25
        kind = "valid" if good else rng.choice(MUTATIONS)
        try:
            inputs = _inputs(target.valid(rng), target.datatypes) if good else hostile(target, kind, rng)
            client().infer(target.name, inputs, client_timeout=timeout)
            outcome = "ok"
        except InferenceServerException as exc:
            outcome = str(exc.status() or "error")
        with lock:
            result.sent += 1
            result.answered[outcome] += 1
            result.by_mutation[kind] += 1
            if "DEADLINE" in outcome:
                result.hangs += 1
            if good and outcome != "ok":
                result.good_failed.append(f"{target.name}: {outcome}")
            if not good and outcome == "ok":
                result.hostile_scored[kind] += 1

    with ThreadPoolExecutor(threads) as pool:
        # The same mix first: the server's pools and the backends' shared memory grow to what the mix needs.
        list(pool.map(one, range(-warmup, 0)))
        result = Campaign()
        result.rss_before = process_tree_rss(server_pid) if server_pid else 0
        started = time.perf_counter()
        list(pool.map(one, range(requests)))
        result.seconds = time.perf_counter() - started
    result.rss_after = process_tree_rss(server_pid) if server_pid else 0
    probe = grpcclient.InferenceServerClient(url)
    try:
        result.alive = bool(probe.is_server_live()) and all(probe.is_model_ready(t.name) for t in targets)
    except InferenceServerException:
        result.alive = False
    finally:
        probe.close()
    return result


def main(argv: list[str] | None = None) -> int:
    from bench.hostile_targets import demo_targets

    ap = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000, help="requests measured (default 10000)")
    ap.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    ap.add_argument(
        "--warmup", type=int, default=2000, help="requests of the same mix sent before memory is first read (2000)"
    )
    ap.add_argument("--root", type=Path, default=Path("build/hostile"), help="work folder (default build/hostile)")
    args = ap.parse_args(argv)
    with demo_targets(args.root) as (server, targets):
        c = run_campaign(
            server.grpc_url,
            targets,
            requests=args.requests,
            threads=args.threads,
            seed=args.seed,
            server_pid=server.process.pid if server.process else None,
            warmup=args.warmup,
        )
    print(f"models {', '.join(t.name for t in targets)}; {c.line()}")
    print("  answers: " + ", ".join(f"{k} {v:,}" for k, v in c.answered.most_common()))
    print("  mutations: " + ", ".join(f"{k} {v:,}" for k, v in sorted(c.by_mutation.items())))
    if c.hostile_scored:
        print(
            "  hostile requests scored anyway (valid after all): "
            + ", ".join(f"{k} {v}" for k, v in c.hostile_scored.items())
        )
    ok = c.alive and c.hangs == 0 and not c.good_failed and c.rss_growth < 0.10
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
