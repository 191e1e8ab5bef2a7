"""``finscore rollout shadow|promote|rollback``: a new model version beside the serving one, then in its place
(:mod:`engine.serving.rollout`), on a running server whose repository is ``--repo``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.common import Subparsers, add_client_tls, add_repo, client_tls
from engine.errors import DataFileError
from engine.settings import resolve_settings

if TYPE_CHECKING:
    import polars as pl

__all__ = ["add_parsers", "rollout_command"]


def add_parsers(sub: Subparsers) -> None:
    p = sub.add_parser("rollout", help="shadow a new model version, promote it, or roll back, with no failed request")
    actions = p.add_subparsers(dest="rollout_action", required=True, metavar="ACTION")
    s = actions.add_parser("shadow", help="serve VERSION beside the serving one and compare their answers on rows")
    s.add_argument("model", metavar="MODEL", help="a served model, e.g. churn")
    s.add_argument("version", type=int, metavar="VERSION", help="the version to shadow")
    rows = s.add_mutually_exclusive_group(required=True)
    rows.add_argument("--data", type=Path, metavar="FILE", help="the rows to score (CSV or Parquet)")
    rows.add_argument(
        "--sample", action="store_true", help="the rows the serving version kept (FINSCORE_SAMPLE, under FINSCORE_HOME)"
    )
    s.add_argument("--rows", type=int, default=10_000, help="rows compared at most (default 10,000)")
    s.add_argument("--keep", action="store_true", help="leave the shadow's folder in the repository afterwards")
    pr = actions.add_parser("promote", help="serve VERSION in place of the serving one")
    pr.add_argument("model", metavar="MODEL")
    pr.add_argument("version", type=int, metavar="VERSION")
    rb = actions.add_parser("rollback", help="serve again the version served before the last promote")
    rb.add_argument("model", metavar="MODEL")
    for a in (s, pr, rb):
        a.add_argument("--url", help="server gRPC address HOST:PORT (default 127.0.0.1:8001)")
        add_repo(a)
        add_client_tls(a)
    p.set_defaults(func=rollout_command)


def rollout_command(args: argparse.Namespace) -> int:
    from engine.security.trail import Trail
    from engine.serving.repository import ModelRepository
    from engine.serving.rollout import promote, rollback, shadow

    settings = resolve_settings(url=args.url, repo=args.repo)
    repo, tls, trail = ModelRepository(settings.repo), client_tls(args), Trail.from_env()
    if args.rollout_action == "promote":
        print(promote(settings.url, repo, args.model, args.version, trail=trail, tls=tls).line("promoted"))
    elif args.rollout_action == "rollback":
        print(rollback(settings.url, repo, args.model, trail=trail, tls=tls).line("rolled back"))
    else:
        rows = _rows(args, settings.url, tls)
        report = shadow(settings.url, repo, args.model, args.version, rows, trail=trail, tls=tls, keep=args.keep)
        print("\n".join(report.lines()))
    return 0


def _rows(args: argparse.Namespace, url: str, tls: object) -> pl.DataFrame:
    from engine.monitoring.compare import read_rows
    from engine.security.trail import finscore_home
    from engine.serving.rollout import serving_version

    if args.data is not None:
        return read_rows(args.data).head(args.rows)
    version = serving_version(url, args.model, tls=tls)
    folder = finscore_home() / "samples" / args.model / version
    if not any(folder.glob("*.parquet")):
        msg = (
            f"{folder}: no sample of {args.model} version {version}: serve it with FINSCORE_SAMPLE={args.model} "
            "(the sample is written as parts fill and at unload), or give --data FILE"
        )
        raise DataFileError(msg)
    return read_rows(folder).tail(args.rows)  # the newest rows
