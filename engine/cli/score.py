"""``finscore score`` (a file through the served model, or in-process) and ``finscore scan`` (tables or auth
logs for threats, resumable), both guarding what they write and recording their decisions in the audit trail."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.cli.common import (
    ENTITY,
    Subparsers,
    add_client_tls,
    add_output_protection,
    add_progress,
    add_repo,
    check_request_rows,
    client_tls,
    output_guard,
    show_progress,
)
from engine.errors import UsageError
from engine.settings import resolve_settings

__all__ = ["add_parsers", "scan_command", "score_command"]


def add_parsers(sub: Subparsers) -> None:
    score = sub.add_parser("score", help="score a file through the server (or in-process with --local)")
    score_sub = score.add_subparsers(dest="model", required=True, metavar="MODEL")
    sc = score_sub.add_parser("churn", help="score customers with the churn model")
    sc.add_argument("--data", required=True, type=Path, help="CSV or Parquet customer table")
    sc.add_argument("--out", required=True, type=Path, help="output .parquet or .csv")
    sc.add_argument("--url", help="server gRPC address HOST:PORT (default 127.0.0.1:8001)")
    add_client_tls(sc)
    sc.add_argument("--local", action="store_true", help="score in this process with the latest version")
    sc.add_argument("--request-rows", type=int, default=1024, help="rows per request (default 1024, max 4096)")
    sc.add_argument(
        "--raw-columns",
        action="store_true",
        help="send raw columns to churn (default: feature tensors encoded here, to churn_features when served)",
    )
    sc.add_argument(
        "--max-row-bytes", type=int, help="a longer CSV row is rejected, the rest scored (default 8388608: 8 MB)"
    )
    add_progress(sc)
    add_output_protection(sc, "id")
    add_repo(sc)
    sc.set_defaults(func=score_command)

    scan = sub.add_parser("scan", help="scan tables or OpenSSH auth logs for threats; resumable, alerts as ECS")
    scan.add_argument(
        "paths", nargs="+", type=Path, metavar="FILE_OR_DIR", help=".parquet, .csv or .log files, or folders"
    )
    scan.add_argument("--out", required=True, type=Path, help="alerts: .jsonl (ECS JSON lines) or .parquet")
    scan.add_argument("--model", default="threat", help="served model name (default threat)")
    scan.add_argument("--url", help="server gRPC address HOST:PORT (default 127.0.0.1:8001)")
    add_client_tls(scan)
    scan.add_argument("--local", action="store_true", help="score in this process with the latest version")
    scan.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler address: spread files and row groups over it")
    scan.add_argument("--batch-rows", type=int, default=65_536, help="rows per batch and checkpoint (default 65536)")
    scan.add_argument(
        "--request-rows", type=int, help="rows per server request (default: as many as the model takes at once)"
    )
    scan.add_argument("--no-shared-memory", action="store_true", help="send rows over gRPC even to a local server")
    scan.add_argument("--every", default="10m", help="window of auth-log features (default 10m)")
    scan.add_argument(
        "--entity", choices=("ip", "user"), default="ip", help="auth-log windows per source IP or per user (ip)"
    )
    scan.add_argument(
        "--threads", type=int, help="ONNX Runtime threads per unit with --local (default: half the cores; 2 units run)"
    )
    scan.add_argument("--restart", action="store_true", help="ignore the checkpoint of an unfinished scan")
    _add_siem(scan)
    add_progress(scan)
    add_output_protection(scan, "record_id, user_name, source_ip or file")
    add_repo(scan)
    scan.set_defaults(func=scan_command)


def _add_siem(p: argparse.ArgumentParser) -> None:
    """``--siem`` and its companions; :class:`engine.batch.scan.siem.SiemTarget` checks them."""
    p.add_argument(
        "--siem",
        metavar="URL",
        help="also send each alert to a syslog collector: syslog://HOST:PORT (TCP) or syslogs://HOST:PORT (TLS)",
    )
    p.add_argument("--siem-format", default="cef", metavar="cef|ecs", help="message body: CEF (default) or ECS JSON")
    p.add_argument("--siem-ca", type=Path, metavar="FILE", help="syslogs://: the CA (PEM) to trust for the collector")
    p.add_argument(
        "--siem-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="after the scan, give up on a collector down this long (default 60); a rerun sends what was left",
    )


def score_command(args: argparse.Namespace) -> int:
    from engine.batch.score import score_file, score_file_through
    from engine.security.trail import DecisionAudit, Trail

    s = resolve_settings(repo=args.repo, url=args.url, max_row_bytes=args.max_row_bytes)
    check_request_rows(args.request_rows, 4096, "the model's")
    trail = Trail.from_env()
    guard = output_guard(args, ("id",), ("id",), trail)

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
            progress=show_progress(args),
            guard=guard,
            audit=audit(version_dir.name),
            max_row_bytes=s.max_row_bytes,
        )
    else:
        from clients import ModelClient

        features = False if args.raw_columns else None
        with ModelClient(s.url, "churn", tls=client_tls(args), features=features) as client:
            summary = score_file_through(
                client,
                args.data,
                args.out,
                request_rows=args.request_rows,
                progress=show_progress(args),
                guard=guard,
                audit=audit(client.served_version()),
                max_row_bytes=s.max_row_bytes,
            )
    print(f"{args.out}: {summary.line()}")
    print(f"decisions recorded in the audit log {trail.path}")
    return 0


def scan_command(args: argparse.Namespace) -> int:
    from engine.batch.scan import LocalSpec, ServerSpec, scan
    from engine.batch.scan.run import CARRIED, SUBJECTS
    from engine.security.trail import Trail

    s = resolve_settings(repo=args.repo, url=args.url)
    siem = None
    if args.siem is not None:
        from engine.batch.scan.siem import SiemTarget

        siem = SiemTarget.parse(args.siem, body=args.siem_format, ca=args.siem_ca, timeout=args.siem_timeout)
    elif args.siem_ca is not None or args.siem_format != "cef":
        msg = "--siem-format and --siem-ca apply only with --siem URL"
        raise UsageError(msg)
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
            tls=client_tls(args),
        )
    trail = Trail.from_env()
    try:
        summary = scan(
            args.paths,
            args.out,
            spec=spec,
            batch_rows=args.batch_rows,
            every=args.every,
            entity=ENTITY[args.entity],
            dask=args.dask,
            restart=args.restart,
            progress=show_progress(args),
            guard=output_guard(args, CARRIED, SUBJECTS, trail),
            trail=trail,
            siem=siem,
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
    if summary.siem_problem:
        print(f"Error: {summary.siem_problem}", file=sys.stderr)
        return 1
    return 0
