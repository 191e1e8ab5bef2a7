"""``finscore drift``: how far a current table has moved from a reference one, column by column and in a model's
score, for the operator who decides whether to retrain.

The exit code is the verdict, so a scheduled job can act on it without reading the table: 0 when no PSI reaches
the threshold, :data:`DRIFTED` (3) when one does, 1 on an error (2 on a flag used wrongly), as for every command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import Subparsers, add_repo, text_table
from engine.settings import resolve_settings

__all__ = ["DRIFTED", "add_parsers", "drift_command"]

#: The exit code when a column (or the score) has drifted.
DRIFTED = 3


def add_parsers(sub: Subparsers) -> None:
    p = sub.add_parser(
        "drift",
        help="data drift of a table against a reference one (PSI, KS, chi-squared); exit 3 when a column drifted",
    )
    p.add_argument(
        "--reference",
        required=True,
        type=Path,
        metavar="FILE",
        help="the reference table (CSV or Parquet), or MODEL[:VERSION]: the sample of training inputs a version keeps",
    )
    p.add_argument("--current", required=True, type=Path, metavar="FILE", help="the table to judge (CSV or Parquet)")
    p.add_argument(
        "--model", metavar="NAME", help="compare this served model's input columns, and its score if it has one"
    )
    add_repo(p)
    p.add_argument(
        "--threshold", type=float, default=0.2, help="PSI at or above which a column has drifted (default 0.2)"
    )
    p.add_argument(
        "--exclude", action="append", default=[], metavar="COL", help="a column not to compare, e.g. an id (repeatable)"
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    p.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write DIR/index.html with a histogram pair per drifted column (needs finscore[bench])",
    )
    p.set_defaults(func=drift_command)


def drift_command(args: argparse.Namespace) -> int:
    from engine.monitoring import HEADER, drift_files, require_matplotlib, write_html, write_json

    if args.report is not None:
        require_matplotlib()  # before the work, not after it
    repo = resolve_settings(repo=args.repo).repo  # a model's, and the reference's when it names a version
    report = drift_files(
        args.reference, args.current, threshold=args.threshold, model=args.model, repo=repo, exclude=args.exclude
    )
    print(f"reference: {report.reference} ({report.reference_rows:,} rows)")
    print(f"current:   {report.current} ({report.current_rows:,} rows)")
    if report.model is not None:
        m = report.model
        scored = f", its {m.score} scored in-process" if m.score else ""
        print(f"model:     {m.name} version {m.version} ({m.family}){scored}")
    for note in report.notes:
        print(f"note: {note}")
    print()
    print(text_table(report.rows(), HEADER))
    print()
    print(report.summary())
    if args.json is not None:
        print(f"figures written to {write_json(report, args.json)}")
    if args.report is not None:
        print(f"report written to {write_html(report, args.report)}")
    return DRIFTED if report.drifted else 0
