"""Triton's own perf_analyzer, set up from the registry and run beside finscore's load generator.

The PyPI ``perf-analyzer`` package is an empty placeholder; the binary matching the bundled server (2.51)
ships in the ``tritonclient==2.51.0`` wheel, which installs it as ``perf_analyzer`` next to this Python. It
links ``libb64.so.0d`` and ``libcudart.so.12``, which the ``nvidia-pytriton`` wheel carries under hashed
names in ``nvidia_pytriton.libs``: :func:`setup` links them under their own names into one folder of the
environment (``make bench-tools`` runs it; :func:`run` does too when needed).

:func:`run` feeds perf_analyzer the suite's own rows (``--input-data``), one concurrency level at a time, and
reads its CSV into the suite's run records (latencies in ms, server breakdown in µs). It runs in one of two
:data:`MODES`: ``sync`` (its default: one blocking thread per request in flight) or ``async`` (one thread keeps
them all in flight). On cores the server shares, the client's thread model moves what the server delivers:
churn at concurrency 16 on 2 cores measured 4,427-4,874 req/s in sync mode and 5,100-5,308 in async mode
with one thread, beside 5,397-5,401 from finscore's coroutines, in the same minutes.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import FinscoreError

__all__ = ["MODES", "PerfAnalyzerError", "binary", "input_data", "mode_like", "run", "setup"]

#: perf_analyzer's client modes, by name → its flags: ``sync`` sends from a blocking thread per request in
#: flight (as finscore's threads); ``async`` from one thread for them all (as finscore's coroutines).
MODES = {"sync": [], "async": ["--async", "--max-threads", "1"]}


def mode_like(driver: str) -> str:
    """The perf_analyzer mode shaped like a closed loop's ``driver`` (``"threads"`` or ``"coroutines"``)."""
    return "async" if driver == "coroutines" else "sync"


#: perf_analyzer's sentence when its trials never agree within the stability threshold, and how many trials it
#: gets on the one retry that follows.
UNSTABLE = "Failed to obtain stable measurement"
RETRY_TRIALS = 10

#: The libraries perf_analyzer needs, by the name it asks for → the start of the wheel's hashed file name.
_LIBS = {"libb64.so.0d": "libb64-", "libcudart.so.12": "libcudart-"}


class PerfAnalyzerError(FinscoreError):
    """perf_analyzer is missing, or it failed (with its own last line)."""


def binary() -> Path:
    """The perf_analyzer the tritonclient wheel installed beside this Python."""
    path = Path(sys.executable).parent / "perf_analyzer"
    if not path.is_file():
        msg = f"perf_analyzer is not installed at {path}: run `make bench-tools` (it ships in tritonclient==2.51.0)"
        raise PerfAnalyzerError(msg)
    return path


def setup() -> Path:
    """Link the libraries perf_analyzer needs into ``<env>/lib/perf_analyzer-libs`` (idempotent); that folder."""
    from engine.serving.server import triton_paths

    source = triton_paths().libs
    target = Path(sys.prefix) / "lib" / "perf_analyzer-libs"
    target.mkdir(parents=True, exist_ok=True)
    for name, prefix in _LIBS.items():
        found = sorted(source.glob(f"{prefix}*"))
        if not found:
            msg = f"{source} has no {prefix}* library: reinstall nvidia-pytriton (perf_analyzer needs {name})"
            raise PerfAnalyzerError(msg)
        link = target / name
        if not link.exists():
            link.unlink(missing_ok=True)  # a dangling link from an older environment
            link.symlink_to(found[0])
    return target


def _env() -> dict[str, str]:
    """This environment with the linked libraries first on perf_analyzer's library path."""
    libs = [str(setup()), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, libs))}


def input_data(pool: dict[str, np.ndarray], path: Path, *, rows: int = 64) -> Path:
    """The suite's rows in perf_analyzer's ``--input-data`` JSON: one entry per row, each input's content and shape."""
    entries = []
    n = min(rows, len(next(iter(pool.values()))))
    for i in range(n):
        entry = {}
        for name, arr in pool.items():
            row = arr[i].reshape(-1)
            if arr.dtype == object:
                content: list[Any] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in row]
            else:
                # perf_analyzer's JSON has no missing value: NaN is sent as 0.0.
                content = [0.0 if isinstance(v, float) and np.isnan(v) else v for v in row.tolist()]
            entry[name] = {"content": content, "shape": list(arr.shape[1:])}
        entries.append(entry)
    path.write_text(json.dumps({"data": entries}), encoding="utf-8")
    return path


def _row(record: dict[str, str], *, batch: int) -> dict[str, Any]:
    def us(key: str) -> float:
        return float(record[key])

    return {
        "target": "perf_analyzer",
        "mode": "closed",
        "level": int(record["Concurrency"]),
        "batch": batch,
        "throughput": float(record["Inferences/Second"]),
        "p50_ms": us("p50 latency") / 1000,
        "p90_ms": us("p90 latency") / 1000,
        "p99_ms": us("p99 latency") / 1000,
        "p999_ms": float("nan"),
        "max_ms": float("nan"),
        "requests": None,
        "errors": 0,
        "server": {
            "queue_us": us("Server Queue"),
            "compute_input_us": us("Server Compute Input"),
            "compute_infer_us": us("Server Compute Infer"),
            "compute_output_us": us("Server Compute Output"),
            "avg_batch": None,
        },
    }


def run(
    url: str, model: str, pool: dict[str, np.ndarray], *, concurrency: Sequence[int], duration: float,
    batch: int = 1, mode: str = "sync", tls: Any = None, rows: int = 64,
) -> list[dict[str, Any]]:  # fmt: skip
    """perf_analyzer in ``mode`` (see :data:`MODES`) at each concurrency (``-s 100 --max-trials 3``, windows of
    ``duration`` s), the first ``rows`` of ``pool`` as its input data (sent in turn), their ``config`` the mode."""
    if mode not in MODES:
        msg = f"perf_analyzer modes are {', '.join(MODES)}, not {mode!r}"
        raise ValueError(msg)
    exe, env = binary(), _env()
    out = []
    with tempfile.TemporaryDirectory(prefix="finscore-pa-") as tmp:
        data = input_data(pool, Path(tmp) / "input.json", rows=rows)
        for level in concurrency:
            csv_path = Path(tmp) / f"c{level}.csv"
            cmd = [
                str(exe), "-m", model, "-u", url, "-i", "grpc", "-b", str(batch),
                f"--concurrency-range={level}:{level}", "-s", "100", "--max-trials", "3",
                "-p", str(int(duration * 1000)), "--input-data", str(data), "-f", str(csv_path), *MODES[mode],
            ]  # fmt: skip
            if tls is not None:  # clients.Tls
                cmd.append("--ssl-grpc-use-ssl")
                cmd += [f"--ssl-grpc-root-certifications-file={tls.ca}"] if tls.ca else []
                if tls.cert:
                    cmd += [f"--ssl-grpc-certificate-chain-file={tls.cert}", f"--ssl-grpc-private-key-file={tls.key}"]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60 + 6 * duration)
            if done.returncode != 0 and UNSTABLE in done.stdout + done.stderr:
                # Three trials that disagree beyond -s on a busy host: let it look for three that agree among
                # more (as a person would rerun it), rather than lose the run's cross-check.
                cmd[cmd.index("--max-trials") + 1] = str(RETRY_TRIALS)
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60 + 12 * duration)
            if done.returncode != 0 or not csv_path.is_file():
                lines = (done.stdout + done.stderr).strip().splitlines()
                msg = f"perf_analyzer failed at concurrency {level}: {lines[-1] if lines else 'no output'}"
                raise PerfAnalyzerError(msg)
            with csv_path.open(encoding="utf-8") as f:
                records = list(csv.DictReader(f))
            out.extend({**_row(r, batch=batch), "config": mode, "seconds": duration} for r in records)
    return out


def main() -> None:
    """``python -m bench.perf_analyzer`` (``make bench-tools``): link the libraries, check the binary starts."""
    exe, env = binary(), _env()
    done = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True, timeout=30)
    lines = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0:
        raise SystemExit(f"perf_analyzer does not start: {lines[-1] if lines else 'no output'}")
    print(f"{exe}: {lines[0] if lines else 'ready'} (libraries in {env['LD_LIBRARY_PATH'].split(os.pathsep)[0]})")


if __name__ == "__main__":
    main()
