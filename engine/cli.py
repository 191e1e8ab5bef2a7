"""The ``finscore`` command.

Errors print ``Error: <one sentence>`` on stderr and exit 1 (2 for usage errors); ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.settings import resolve_settings
from engine.errors import FinscoreError

__all__ = ["main"]


_ENTITY = {"ip": "source_ip", "user": "user"}


def _add_repo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo", type=Path, help="model repository folder (default: model_repo/ of the source tree, or FINSCORE_REPO)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finscore", description="GPU-first scoring engine served by NVIDIA Triton.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the bundled Triton server on the model repository")
    _add_repo(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (default 8001)")
    serve.add_argument("--http-port", type=int, help="HTTP port (default 8000)")
    serve.add_argument("--metrics-port", type=int, help="metrics port (default 8002)")
    serve.add_argument("--models", help="comma-separated models to load (default: every trained model)")
    serve.add_argument("--log", type=Path, help="server log file")
    serve.add_argument("--verbose", action="store_true", help="verbose Triton log")
    serve.add_argument("--tls-cert", type=Path, help="server certificate (PEM): gRPC over TLS, HTTP off")
    serve.add_argument("--tls-key", type=Path, help="the server certificate's private key (PEM)")
    serve.add_argument("--tls-ca", type=Path, help="CA (PEM) that signs client certificates: mutual TLS")
    serve.add_argument(
        "--fraud-redis",
        metavar="URL",
        help="keep the fraud model's card and terminal state in this Redis (redis://HOST:PORT/DB), shared with "
        "every server given the same URL (default: in the server process; FINSCORE_FRAUD_REDIS does the same)",
    )

    train = sub.add_parser("train", help="train a model and write a new version into the repository")
    train_sub = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    churn = train_sub.add_parser("churn", help="gradient-boosted churn model on a customer table")
    churn.add_argument("--data", required=True, type=Path, help="CSV or Parquet customer table")
    churn.add_argument("--label", required=True, help="the churn column (Yes/No, 1/0, True/False)")
    churn.add_argument("--id", dest="id_column", help="id column, carried to outputs, never a feature")
    churn.add_argument("--positive", help="the label value meaning 'churned' when it is not yes/true/1")
    churn.add_argument("--actions", type=Path, help="CSV reason,action to use instead of the default actions")
    churn.add_argument("--seed", type=int, default=42, help="split and training seed (default 42)")
    churn.add_argument("--instances", type=int, default=1, help="Triton instances of the served model (default 1)")
    churn.add_argument("--device", help="auto, cpu or gpu (default auto)")
    _add_repo(churn)
    threat = train_sub.add_parser("threat", help="autoencoder anomaly model on event or log data")
    threat.add_argument("--data", required=True, type=Path, help="CSV or Parquet event table, or an OpenSSH auth log")
    threat.add_argument("--label", help="column telling normal rows from attacks (optional)")
    threat.add_argument("--normal", help="the label value of normal rows (default: normal/benign/0/false/no)")
    threat.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate of alerts (default 0.01)")
    threat.add_argument("--id", dest="id_column", help="id column, carried to alerts, never a feature")
    threat.add_argument("--name", default="threat", help="served model name (default threat)")
    threat.add_argument(
        "--entity", choices=("ip", "user"), default="ip", help="auth logs: windows per source IP or per user (ip)"
    )
    threat.add_argument("--every", default="10m", help="auth logs: window length (default 10m)")
    threat.add_argument("--seed", type=int, default=42, help="split and training seed (default 42)")
    threat.add_argument("--instances", type=int, default=1, help="Triton instances of the served model (default 1)")
    threat.add_argument("--device", help="auto, cpu or gpu (default auto)")
    _add_repo(threat)

    fraud = train_sub.add_parser("fraud", help="card-fraud model on a transaction table (time-based split)")
    fraud.add_argument("--data", required=True, type=Path, help="CSV or Parquet transaction table")
    fraud.add_argument("--label", required=True, help="the fraud column (1/0, true/false, yes/no; blank = unknown)")
    fraud.add_argument(
        "--time", required=True, help="the transaction time column (datetime, ISO text or epoch seconds)"
    )
    fraud.add_argument("--card", required=True, help="the card (or customer) id column")
    fraud.add_argument("--terminal", help="the terminal or merchant id column (terminal features need it)")
    fraud.add_argument("--amount", default="amount", help="the amount column (default amount)")
    fraud.add_argument("--id", dest="id_column", help="the transaction id column (default: the row number)")
    fraud.add_argument(
        "--label-delay", default="7d", help="how long a fraud label takes to arrive, e.g. 7d, 1d, 12h (default 7d)"
    )
    fraud.add_argument("--train-start", help="first day of the training period (default: the data's first day)")
    fraud.add_argument("--train-days", type=int, default=7, help="days in the training period (default 7)")
    fraud.add_argument("--gap-days", type=int, default=7, help="days between training and test (default 7)")
    fraud.add_argument("--test-days", type=int, default=7, help="days in the test period (default 7)")
    fraud.add_argument(
        "--keep-known-cards", action="store_true", help="keep cards with an already known fraud in the test days"
    )
    fraud.add_argument("--seed", type=int, default=42, help="training seed (default 42)")
    fraud.add_argument("--device", help="auto, cpu or gpu (default auto)")
    _add_repo(fraud)

    score = sub.add_parser("score", help="score a file through the server (or in-process with --local)")
    score_sub = score.add_subparsers(dest="model", required=True, metavar="MODEL")
    sc = score_sub.add_parser("churn", help="score customers with the churn model")
    sc.add_argument("--data", required=True, type=Path, help="CSV or Parquet customer table")
    sc.add_argument("--out", required=True, type=Path, help="output .parquet or .csv")
    sc.add_argument("--url", help="server gRPC address HOST:PORT (default 127.0.0.1:8001)")
    _add_client_tls(sc)
    sc.add_argument("--local", action="store_true", help="score in this process with the latest version")
    sc.add_argument("--request-rows", type=int, default=1024, help="rows per request (default 1024, max 4096)")
    sc.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_output_protection(sc, "id")
    _add_repo(sc)

    scan = sub.add_parser("scan", help="scan tables or OpenSSH auth logs for threats; resumable, alerts as ECS")
    scan.add_argument(
        "paths", nargs="+", type=Path, metavar="FILE_OR_DIR", help=".parquet, .csv or .log files, or folders"
    )
    scan.add_argument("--out", required=True, type=Path, help="alerts: .jsonl (ECS JSON lines) or .parquet")
    scan.add_argument("--model", default="threat", help="served model name (default threat)")
    scan.add_argument("--url", help="server gRPC address HOST:PORT (default 127.0.0.1:8001)")
    _add_client_tls(scan)
    scan.add_argument("--local", action="store_true", help="score in this process with the latest version")
    scan.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler address: spread files and row groups over it")
    scan.add_argument("--batch-rows", type=int, default=65_536, help="rows per batch and checkpoint (default 65536)")
    scan.add_argument("--request-rows", type=int, default=8192, help="rows per server request (default 8192)")
    scan.add_argument("--no-shared-memory", action="store_true", help="send rows over gRPC even to a local server")
    scan.add_argument("--every", default="10m", help="window of auth-log features (default 10m)")
    scan.add_argument(
        "--entity", choices=("ip", "user"), default="ip", help="auth-log windows per source IP or per user (ip)"
    )
    scan.add_argument(
        "--threads", type=int, help="ONNX Runtime threads per unit with --local (default: half the cores; 2 units run)"
    )
    scan.add_argument("--restart", action="store_true", help="ignore the checkpoint of an unfinished scan")
    scan.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_output_protection(scan, "record_id, user_name, source_ip or file")
    _add_repo(scan)

    demo_data = sub.add_parser("demo-data", help="write a synthetic data set with a known signal")
    dd_sub = demo_data.add_subparsers(dest="model", required=True, metavar="MODEL")
    for kind, text, rows in (
        ("churn", "a retail-bank customer table with a 'churned' label", 5000),
        ("events", "network connection records with a 'label' (normal or an attack type)", 20_000),
        ("authlog", "an OpenSSH auth log with brute-force and spraying attacks (lines)", 20_000),
    ):
        dd = dd_sub.add_parser(kind, help=text)
        dd.add_argument("--rows", type=int, default=rows)
        dd.add_argument("--seed", type=int, default=7)
        dd.add_argument("--out", required=True, type=Path)

    from bench.cli import add_arguments

    add_arguments(sub.add_parser("bench", help="latency and throughput of a served model, beside perf_analyzer"))

    demo = sub.add_parser("demo", help="the main job: demo data, train churn and threat, serve, score, scan, print")
    demo.add_argument("--rows", type=int, default=5000)
    demo.add_argument("--workdir", type=Path, default=Path("build/demo"))
    _add_repo(demo)
    from engine.security.protect import add_protect_arguments

    add_protect_arguments(sub)
    from engine.security.audit import add_audit_arguments

    add_audit_arguments(sub)
    from engine.security.erasure import add_forget_arguments

    add_forget_arguments(sub)
    return parser


def _add_output_protection(p: argparse.ArgumentParser, columns: str) -> None:
    p.add_argument(
        "--tokenize", action="append", default=[], metavar="COL", help=f"write {columns} as keyed tokens (repeatable)"
    )
    p.add_argument(
        "--encrypt", action="append", default=[], metavar="COL", help=f"write {columns} encrypted (AES-GCM; repeatable)"
    )
    p.add_argument(
        "--keys", type=Path, metavar="FILE", help="key file for --tokenize/--encrypt (or FINSCORE_PROTECT_KEYS)"
    )


def _guard(args: argparse.Namespace, carried: Sequence[str], subject: Sequence[str], trail: Any) -> Any:
    """The output guard of ``score``/``scan``: card numbers masked always, columns tokenized or encrypted."""
    from engine.security.guard import OutputGuard
    from engine.security.protect import KeyRing

    keys = KeyRing.from_env_or_file(args.keys) if args.tokenize or args.encrypt else None
    return OutputGuard.build(
        carried,
        tokenize=args.tokenize,
        encrypt=args.encrypt,
        keys=keys,
        subject=subject,
        pseudonym_key=trail.pseudonym_key,
    )


def _add_client_tls(p: argparse.ArgumentParser) -> None:
    from clients.tls import add_tls_arguments

    add_tls_arguments(p)


def _client_tls(args: argparse.Namespace) -> Any:
    from clients.tls import Tls

    return Tls.from_files(args.tls_ca, args.tls_cert, args.tls_key)


def _serve(args: argparse.Namespace) -> int:
    from engine.serving.server import ServerPorts, ServerTls, TritonServer

    s = resolve_settings(
        repo=args.repo,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
    )
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    server = TritonServer(
        s.repo,
        ports=ServerPorts(s.grpc_port, s.http_port, s.metrics_port),
        host=s.host,
        models=models,
        log_path=args.log,
        verbose=args.verbose,
        env={"FINSCORE_FRAUD_REDIS": args.fraud_redis} if args.fraud_redis else None,
        tls=ServerTls.from_files(args.tls_cert, args.tls_key, args.tls_ca),
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
        f"  log {server.log_path}\nPress Ctrl-C to stop.",
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


def _train(args: argparse.Namespace) -> int:
    from engine.device import resolve_device
    from engine.serving.repository import ModelRepository

    s = resolve_settings(repo=args.repo, device=args.device)
    device = resolve_device(s.device)
    if args.model == "threat":
        return _train_threat(args, ModelRepository(s.repo), device)
    if args.model == "fraud":
        return _train_fraud(args, ModelRepository(s.repo), device)
    from engine.families.churn import train_churn

    result = train_churn(
        args.data,
        label=args.label,
        id_column=args.id_column,
        positive=args.positive,
        repo=ModelRepository(s.repo),
        actions=args.actions,
        seed=args.seed,
        device=device,
        instance_count=args.instances,
    )
    print(f"churn version {result.version} written to {result.path} ({result.rounds} trees, {result.seconds:.1f} s)")
    print(f"features: {len(result.schema.columns)}; left out: {_left_out(result.schema)}")
    if result.rows_without_label:
        print(f"rows without a label, left out of training: {result.rows_without_label:,}")
    print("held-out metrics (stratified 20%):")
    print(result.metrics.table())
    return 0


def _left_out(schema: Any) -> str:
    """The columns training did not use, each with its reason."""
    return ", ".join(f"{k} ({v})" for k, v in schema.excluded.items()) or "none"


def _train_threat(args: argparse.Namespace, repo: Any, device: Any) -> int:
    from engine.families.threat import train_threat

    r = train_threat(
        args.data,
        label=args.label,
        normal=args.normal,
        fpr=args.fpr,
        id_column=args.id_column,
        entity=_ENTITY[args.entity],
        every=args.every,
        name=args.name,
        repo=repo,
        seed=args.seed,
        device=device,
        instance_count=args.instances,
    )
    print(f"{args.name} version {r.version} written to {r.path} ({r.epochs} epochs, {r.seconds:.1f} s)")
    print(f"columns: {len(r.schema.columns)}; left out: {_left_out(r.schema)}")
    rows = r.rows
    print(
        f"rows: {rows['train']:,} trained on, {rows['validation']:,} for early stopping, "
        f"{rows['holdout_normal']:,} held out" + (f", {rows['attacks']:,} attacks" if args.label else "")
    )
    print(f"alert threshold {r.threshold:.5g}: alerts on {r.holdout_fpr:.2%} of held-out normal rows")
    if r.metrics is not None:
        print("held-out normal rows and all attack rows:")
        print(r.metrics.table())
    return 0


def _train_fraud(args: argparse.Namespace, repo: Any, device: Any) -> int:
    from engine.families.fraud import FraudColumns, parse_duration_us, train_fraud

    for flag in ("train_days", "test_days"):
        if getattr(args, flag) < 1:
            print(f"Error: --{flag.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.gap_days < 0:
        print("Error: --gap-days must not be negative", file=sys.stderr)
        return 2
    columns = FraudColumns(
        card=args.card, time=args.time, amount=args.amount, label=args.label, terminal=args.terminal, id=args.id_column
    )
    r = train_fraud(
        args.data,
        columns=columns,
        delay_us=parse_duration_us(args.label_delay),
        train_start=args.train_start,
        train_days=args.train_days,
        gap_days=args.gap_days,
        test_days=args.test_days,
        keep_known_cards=args.keep_known_cards,
        repo=repo,
        seed=args.seed,
        device=device,
    )
    print(f"fraud version {r.version} written to {r.path} ({r.rounds} trees, {r.seconds:.1f} s)")
    print(f"split: {r.split.describe()}; label delay {args.label_delay}")
    rows = r.rows
    print(
        f"rows: {rows['train']:,} trained on (the last {rows['validation']:,} also for early stopping and thresholds), "
        f"{rows['test']:,} tested ({rows['test_known_cards_left_out']:,} more left out: their card had a known fraud); "
        f"the served state starts from all {rows['history']:,}"
    )
    print(f"decision: review from {r.thresholds['review']:.4f}, decline from {r.thresholds['decline']:.4f}")
    if r.metrics is None:
        print("no test metrics: the test period holds no rows, or no frauds")
    else:
        print("test period:")
        print(r.metrics.table())
    return 0


def _score(args: argparse.Namespace) -> int:
    from engine.batch.score import score_file, score_file_through
    from engine.security.trail import DecisionAudit, Trail

    s = resolve_settings(repo=args.repo, url=args.url)
    if not 1 <= args.request_rows <= 4096:
        print("Error: --request-rows must be between 1 and 4096 (the model's max batch size)", file=sys.stderr)
        return 2
    trail = Trail.from_env()
    guard = _guard(args, ("id",), ("id",), trail)

    def audit(version: str) -> DecisionAudit:
        return DecisionAudit(
            trail,
            command="score",
            model="churn",
            version=version,
            decision="retention_action",
            score="churn_probability",
        )

    if args.local:
        from engine.families.churn import ChurnScorer
        from engine.serving.repository import ModelRepository

        version_dir = ModelRepository(s.repo).latest("churn")
        scorer = ChurnScorer.load(version_dir)
        trail.model_load("churn", version_dir.name, where="in-process")
        summary = score_file(
            args.data,
            args.out,
            score=scorer.score,
            inputs=[(c.name, c.wire) for c in scorer.schema.columns],
            id_column=scorer.schema.id_column,
            request_rows=args.request_rows,
            progress=not args.no_progress,
            guard=guard,
            audit=audit(version_dir.name),
        )
    else:
        from clients import ModelClient

        with ModelClient(s.url, "churn", tls=_client_tls(args)) as client:
            summary = score_file_through(
                client,
                args.data,
                args.out,
                request_rows=args.request_rows,
                progress=not args.no_progress,
                guard=guard,
                audit=audit(client.served_version()),
            )
    print(f"{args.out}: {summary.line()}")
    print(f"decisions recorded in the audit log {trail.path}")
    return 0


def _scan(args: argparse.Namespace) -> int:
    import os

    from engine.batch.scan import LocalSpec, ServerSpec, scan
    from engine.batch.scan.run import CARRIED, SUBJECTS
    from engine.security.trail import Trail

    s = resolve_settings(repo=args.repo, url=args.url)
    if not 1 <= args.request_rows <= 32768:
        print("Error: --request-rows must be between 1 and 32768 (the threat model's max batch size)", file=sys.stderr)
        return 2
    spec: LocalSpec | ServerSpec
    if args.local:
        from engine.serving.repository import ModelRepository

        version = ModelRepository(s.repo).latest(args.model)
        spec = LocalSpec(str(version), threads=args.threads or max(1, (os.cpu_count() or 2) // 2))
    else:
        spec = ServerSpec(
            s.url,
            args.model,
            shared_memory=False if args.no_shared_memory else None,
            request_rows=args.request_rows,
            tls=_client_tls(args),
        )
    trail = Trail.from_env()
    try:
        summary = scan(
            args.paths,
            args.out,
            spec=spec,
            batch_rows=args.batch_rows,
            every=args.every,
            entity=_ENTITY[args.entity],
            dask=args.dask,
            restart=args.restart,
            progress=not args.no_progress,
            guard=_guard(args, CARRIED, SUBJECTS, trail),
            trail=trail,
        )
    except KeyboardInterrupt:
        print("Interrupted: run the same command again to resume from the checkpoint.", file=sys.stderr)
        return 130
    print(f"{args.out}: {summary.line()}")
    print(
        f"model {summary.model} version {summary.version} ({summary.transport}); summary in "
        f"{Path(summary.out).with_name(Path(summary.out).stem + '.summary.json')}"
    )
    print(f"alerts recorded in the audit log {trail.path}")
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from engine.demo.tables import churn_customers, network_events
    from engine.tables.io import write_table

    if args.model == "authlog":
        from engine.demo.authlog import write_ssh_auth_log

        attackers = write_ssh_auth_log(args.out, args.rows, seed=args.seed)
        print(f"wrote {args.rows:,} auth-log lines to {args.out} ({len(attackers)} attacking addresses)")
        return 0
    make, what = (churn_customers, "customers") if args.model == "churn" else (network_events, "network events")
    path = write_table(make(args.rows, seed=args.seed), args.out)
    print(f"wrote {args.rows:,} {what} to {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bench.cli import bench_command

    return bench_command(args)


def _demo(args: argparse.Namespace) -> int:
    from engine.demo.job import run_demo

    s = resolve_settings(repo=args.repo)
    run_demo(rows=args.rows, workdir=args.workdir, repo=s.repo)
    return 0


_COMMANDS = {
    "serve": _serve,
    "train": _train,
    "score": _score,
    "scan": _scan,
    "demo-data": _demo_data,
    "bench": _bench,
    "demo": _demo,
    "protect": lambda a: a.func(a),  # engine.security.protect sets func
    "protect-keys": lambda a: a.func(a),
    "audit": lambda a: a.func(a),  # engine.security.audit sets func
    "forget": lambda a: a.func(a),  # engine.security.erasure sets func
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except FinscoreError as exc:
        if args.debug:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        if args.debug:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
