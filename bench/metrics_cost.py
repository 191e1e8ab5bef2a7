"""What finscore's own metrics and its sample of scored rows cost a served model: closed-loop throughput with them
on and off, one run.

The same model is served twice per round by the bundled Triton, once with ``FINSCORE_METRICS=1`` (the default)
and ``FINSCORE_SAMPLE=<model>`` (one row in 100 kept), once with neither, the order turned every other round,
each driven by the same closed loop (the gRPC stub, requests serialised before the loop, ``--concurrency``
workers); a round's ratio is taken within the round and the median of the rounds is printed. After each run
the metrics port and the sample folder are read: the "on" run must show the requests it scored in
``finscore_score_count`` and the rows it kept, the "off" run neither.

    python -m bench.metrics_cost --repo R --model churn --data telco.csv --concurrency 16 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import urllib.request
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import polars as pl
import tritonclient.grpc as grpcclient

from bench.load import closed_loop
from bench.report import machine_facts, machine_line
from bench.targets import TritonTarget, request_pool
from engine.serving.repository import DEFAULT_REPOSITORY
from engine.serving.server import ServerPorts, TritonServer


def _scored(metrics_port: int, model: str) -> float:
    """``finscore_score_count`` of ``model`` on the metrics port (0 when the series is not there)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("finscore_score_count{") and f'model="{model}"' in line:
            total += float(line.rpartition(" ")[2])
    return total


def _run(repo: Path, model: str, data: Path | None, *, on: bool, args: argparse.Namespace) -> tuple[float, float, int]:
    """Serve ``model`` with the metrics and the sample ``on`` or off, drive it, and return (requests a second, scores
    counted, rows sampled)."""
    home = Path(tempfile.mkdtemp(prefix="finscore-metrics-cost-"))
    env = {"FINSCORE_METRICS": "1" if on else "0", "FINSCORE_SAMPLE": model if on else "", "FINSCORE_HOME": str(home)}
    env |= {"FINSCORE_AUDIT_LOG": str(home / "audit.jsonl"), "FINSCORE_PSEUDONYM_KEY_FILE": str(home / "p.key")}
    try:
        rps, counted = _serve(repo, model, data, env, args)
        sampled = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in home.glob("samples/**/*.parquet"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return rps, counted, sampled


def _serve(
    repo: Path, model: str, data: Path | None, env: dict[str, str], args: argparse.Namespace
) -> tuple[float, float]:
    with (
        TritonServer(repo, ports=ServerPorts.free(), models=[model], env=env) as server,
        grpcclient.InferenceServerClient(server.grpc_url) as client,
    ):
        metadata = client.get_model_metadata(model)
        pool = request_pool(metadata.inputs, data=data, model=model)
        target = TritonTarget(server.grpc_url, model, pool, metadata)
        try:
            m = closed_loop(target, concurrency=args.concurrency, duration=args.duration, warmup=args.warmup)
        finally:
            target.close()
        if m.errors:
            raise SystemExit(f"bench.metrics_cost: {m.errors} requests failed; first: {m.first_error}")
        client.unload_model(model)  # the model's last counts are sent, and its sample written, as it unloads
        return m.throughput, _scored(server.ports.metrics, model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY, help="the model repository")
    parser.add_argument("--model", default="churn", help="the served model (default churn)")
    parser.add_argument("--data", type=Path, help="rows to send (the model's training file); random values without")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    facts = machine_facts(os.getloadavg()[0], tritonclient=dist_version("tritonclient"))
    print(f"{args.model} from {args.repo}, {args.data or 'random rows'}, c={args.concurrency}, batch 1:")
    ratios = []
    for k in range(args.rounds):
        got: dict[bool, Any] = {}
        for on in (True, False) if k % 2 == 0 else (False, True):
            rps, counted, sampled = _run(args.repo, args.model, args.data, on=on, args=args)
            got[on] = rps
            print(
                f"  round {k + 1}, metrics and sample {'on ' if on else 'off'}: {rps:,.0f} req/s, "
                f"scores counted {counted:,.0f}, rows sampled {sampled:,}"
            )
            if (on and not (counted and sampled)) or (not on and (counted or sampled)):
                raise SystemExit("bench.metrics_cost: the metrics port or the sample does not show what was set")
        ratios.append(got[True] / got[False])
        print(f"  round {k + 1}: with them {got[True] / got[False]:.1%} of the throughput without")
    lost = [1 - r for r in ratios]
    each = " ".join(f"{x:+.1%}" for x in lost)
    print(
        f"throughput lost to the metrics and the sample: {each} in the {args.rounds} rounds "
        f"(median {statistics.median(lost):+.1%})"
    )
    print(machine_line(facts))


if __name__ == "__main__":
    main()
