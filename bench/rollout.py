"""A promote under load: failed requests and latency before, during and after ``finscore rollout promote``.

A copy of the model's folder (so the repository given is left as it is) is served pinned to ``--from``; a closed
loop of ``--concurrency`` gRPC workers (requests serialised before the loop, as perf_analyzer's) runs for a third
of ``--duration`` before the switch, a third during it (:func:`engine.serving.rollout.promote` to ``--to`` one
second in) and a third after. Every failed request is counted; each window's p50 and p99 are printed.

    python -m bench.rollout --repo R --model churn --from 1 --to 2 --data FILE --concurrency 16 --duration 30
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from importlib.metadata import version as dist_version
from pathlib import Path

import tritonclient.grpc as grpcclient

from bench.load import closed_loop
from bench.report import machine_facts, machine_line
from bench.targets import TritonTarget, request_pool
from engine.security.audit import AuditLog
from engine.security.trail import Trail
from engine.serving.repository import DEFAULT_REPOSITORY, ModelRepository
from engine.serving.rollout import pin_config, promote
from engine.serving.server import ServerPorts, TritonServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY, help="the model repository")
    parser.add_argument("--model", default="churn")
    parser.add_argument("--from", dest="old", type=int, required=True, help="the version served first")
    parser.add_argument("--to", dest="new", type=int, required=True, help="the version promoted")
    parser.add_argument("--data", type=Path, help="rows to send (the model's training file); random values without")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds in all: before, during, after")
    args = parser.parse_args(argv)
    facts = machine_facts(os.getloadavg()[0], tritonclient=dist_version("tritonclient"))
    with tempfile.TemporaryDirectory(prefix="finscore-rollout-") as tmp:
        repo = ModelRepository(Path(tmp) / "repo")
        shutil.copytree(ModelRepository(args.repo).model_dir(args.model), repo.model_dir(args.model), symlinks=True)
        config = repo.model_dir(args.model) / "config.pbtxt"
        config.write_text(pin_config(config.read_text(encoding="utf-8"), args.old), encoding="utf-8")
        trail = Trail(AuditLog(Path(tmp) / "audit.jsonl"), os.urandom(32))
        with (
            TritonServer(repo, ports=ServerPorts.free(), models=[args.model]) as server,
            grpcclient.InferenceServerClient(server.grpc_url) as client,
        ):
            metadata = client.get_model_metadata(args.model)
            pool = request_pool(metadata.inputs, data=args.data, model=args.model)
            target = TritonTarget(server.grpc_url, args.model, pool, metadata)
            third = args.duration / 3
            print(f"{args.model} version {args.old} → {args.new}, c={args.concurrency}, batch 1, {third:g} s a window:")
            failed, promoted = 0, []
            try:
                for window in ("before", "during", "after"):
                    switch = None
                    if window == "during":

                        def go() -> None:
                            time.sleep(1.0)
                            t0 = time.perf_counter()
                            done = promote(server.grpc_url, repo, args.model, args.new, trail=trail)
                            promoted.append(f"{done.line('promoted')} in {time.perf_counter() - t0:.2f} s")

                        switch = threading.Thread(target=go)
                        switch.start()
                    m = closed_loop(target, concurrency=args.concurrency, duration=third, warmup=0 if switch else 1)
                    if switch is not None:
                        switch.join()
                        print(f"  {promoted[0] if promoted else 'the promote failed'}")
                    failed += m.errors
                    print(
                        f"  {window:6s}  {m.throughput:7,.0f} req/s  p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms  "
                        f"failed {m.errors}" + (f" (first: {m.first_error})" if m.errors else "")
                    )
            finally:
                target.close()
            served = client.get_model_repository_index(as_json=True)["models"]
            ready = sorted(m["version"] for m in served if m["name"] == args.model and m.get("state") == "READY")
    print(f"failed requests in all: {failed}; version ready at the end: {', '.join(ready)}")
    print(machine_line(facts))


if __name__ == "__main__":
    main()
