"""``finscore serve``: the bundled Triton server on the model repository, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli.common import Subparsers, add_repo
from engine.settings import env_name, resolve_settings

__all__ = ["add_parsers", "serve"]


def add_parsers(sub: Subparsers) -> None:
    serve_ = sub.add_parser("serve", help="run the bundled Triton server on the model repository")
    add_repo(serve_)
    serve_.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve_.add_argument("--grpc-port", type=int, help="gRPC port (default 8001)")
    serve_.add_argument("--http-port", type=int, help="HTTP port (default 8000)")
    serve_.add_argument("--metrics-port", type=int, help="metrics port (default 8002)")
    serve_.add_argument("--models", help="comma-separated models to load (default: every trained model)")
    serve_.add_argument("--log", type=Path, help="server log file")
    serve_.add_argument("--verbose", action="store_true", help="verbose Triton log")
    serve_.add_argument("--tls-cert", type=Path, help="server certificate (PEM): gRPC over TLS, HTTP off")
    serve_.add_argument("--tls-key", type=Path, help="the server certificate's private key (PEM)")
    serve_.add_argument("--tls-ca", type=Path, help="CA (PEM) that signs client certificates: mutual TLS")
    serve_.add_argument(
        "--fraud-redis",
        metavar="URL",
        help="keep the fraud model's card and terminal state in this Redis (redis://HOST:PORT/DB), shared with "
        "every server given the same URL (default: in the server process; FINSCORE_FRAUD_REDIS does the same)",
    )
    serve_.add_argument(
        "--cpus",
        help="run Triton and its models on these CPUs only, as taskset writes them (0, 0-3 or 0,2-3): a request "
        "hops between Triton, a model's process and Redis, and on a virtual machine each hop to another CPU "
        "costs a wake-up there (default: every CPU; FINSCORE_CPUS does the same)",
    )
    serve_.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from engine.serving.server import ServerPorts, ServerTls, TritonServer, parse_cpus

    s = resolve_settings(
        repo=args.repo,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        cpus=args.cpus,
    )
    cpus = parse_cpus(s.cpus) if s.cpus else None
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    server = TritonServer(
        s.repo,
        ports=ServerPorts(s.grpc_port, s.http_port, s.metrics_port),
        host=s.host,
        models=models,
        log_path=args.log,
        verbose=args.verbose,
        # The flag reaches the model through the server's environment; without it the server inherits ours.
        env={env_name("fraud_redis"): args.fraud_redis} if args.fraud_redis else None,
        tls=ServerTls.from_files(args.tls_cert, args.tls_key, args.tls_ca),
        cpus=cpus,
    )
    stopping = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    transport = "" if server.tls is None else " (mutual TLS)" if server.tls.ca else " (TLS)"
    print(
        f"Triton is serving {', '.join(server.loaded)} from {server.repo.root}\n"
        f"  gRPC {server.grpc_url}{transport}   HTTP {'off (TLS)' if server.tls else server.http_url}   "
        f"metrics :{s.metrics_port}\n"
        f"  log {server.log_path}"
        + (f"   CPUs {','.join(str(c) for c in sorted(cpus))}" if cpus else "")
        + "\nPress Ctrl-C to stop.",
        flush=True,
    )
    try:
        while not stopping:
            if not server.alive():
                print(f"Error: Triton exited unexpectedly; see {server.log_path}", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        server.stop()
    print("Triton stopped.")
    return 0
