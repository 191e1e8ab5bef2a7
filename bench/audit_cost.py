"""What the audit trail costs a scan of a real table: NSL-KDD's network connections, or a table of your own.

``bench.scan`` measures the trail on generated events (57,459 alerts in 1M rows). A real table is wider and
alerts at its own rate: NSL-KDD's KDDTrain+ has 41 columns (3 of them text) and about half its rows are
attacks. This trains the threat model on the table (its normal rows when it has a label), writes the table
``--copies`` times over as one Parquet file, and times the in-process scan in ``--pairs`` pairs in one
process, each pair one scan without the trail and one with it (``bench.scan``'s ``time_audit_pairs``); it
prints each pair's cost and their median, with the scan's rows and alerts. Figures are printed, never
asserted on. The data is read where it lies and written only to a temporary folder.

    python -m bench.audit_cost [--data FILE] [--label COL] [--copies 4] [--pairs 12]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import polars as pl

from bench.nslkdd import DEFAULT_DATA, load
from bench.scan import in_child, pair_costs, time_audit_pairs

__all__ = ["main", "read_table"]

#: The record id the scan carries into each alert: a table without one gets its row number.
ID = "event_id"


def read_table(path: Path | None) -> tuple[pl.DataFrame, str | None]:
    """The table and its label column: NSL-KDD's KDDTrain+ (label ``label``) when ``path`` is None."""
    if path is None:
        return load(DEFAULT_DATA / "KDDTrain+.txt.gz"), "label"
    table = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=None)
    return table, None


def main(argv: list[str] | None = None) -> None:
    """Command line: train, write the copies, time the pairs, print."""
    from engine.batch.scan import LocalSpec, scan
    from engine.errors import FinscoreError
    from engine.families.threat import train_threat
    from engine.serving.repository import ModelRepository

    parser = argparse.ArgumentParser(prog="python -m bench.audit_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a Parquet or CSV table (default: NSL-KDD's KDDTrain+)")
    parser.add_argument("--label", help="its label column, if any: normal rows train the model")
    parser.add_argument("--normal", default="normal", help="the label's value on normal rows (default normal)")
    parser.add_argument("--copies", type=int, default=4, help="the table written this many times over (default 4)")
    parser.add_argument("--pairs", type=int, default=12, help="pairs of scans, without and with (default 12)")
    args = parser.parse_args(argv)
    if min(args.copies, args.pairs) < 1:
        parser.error("--copies and --pairs must be positive")
    if args.data is None and not DEFAULT_DATA.is_dir():
        parser.error(f"NSL-KDD is not at {DEFAULT_DATA}; pass --data FILE")
    try:
        table, label = read_table(args.data)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SystemExit(f"bench.audit_cost: {args.data} cannot be read as a table ({exc})") from None
    label = args.label or label
    if label is not None and label not in table.columns:
        parser.error(f"--label {label}: the table has no such column")
    with tempfile.TemporaryDirectory(prefix="audit-cost-") as tmp:
        work = Path(tmp)
        try:
            trained = train_threat(
                table.drop(ID, strict=False).with_row_index(ID),
                label=label,
                normal=args.normal if label else None,
                id_column=ID,
                repo=ModelRepository(work / "repo"),
            )
        except FinscoreError as exc:
            raise SystemExit(f"bench.audit_cost: {exc}") from None
        data, warmup = work / "table.parquet", work / "warmup.parquet"
        copies = pl.concat([table] * args.copies).drop(ID, strict=False).with_row_index(ID)
        copies.write_parquet(data)
        copies.head(10_000).write_parquet(warmup)
        (work / "pairs").mkdir()
        spec = LocalSpec(str(trained.path), threads=1)
        print(f"timing the scan of {copies.height:,} rows without and with the audit trail, {args.pairs} pairs ...")
        seconds, _, _ = in_child(time_audit_pairs, data, work / "out.jsonl", spec, args.pairs, work / "pairs", warmup)
        summary = scan([data], work / "alerts.jsonl", spec=spec, restart=True, progress=False)
    median, costs = pair_costs(seconds)
    print(
        f"{copies.height:,} rows ({table.width} columns, {sum(t == pl.String for t in table.dtypes)} of them text), "
        f"{summary.alerts:,} alerts: the scan {statistics.median(seconds[0::2]):.2f} s without the trail, "
        f"{statistics.median(seconds[1::2]):.2f} s with it; each pair {' '.join(f'{c:+.0%}' for c in costs)} "
        f"(median {median:+.1%})"
    )


if __name__ == "__main__":
    main()
