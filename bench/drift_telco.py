"""``finscore drift`` on a real table, the IBM Telco Customer Churn data set (7,043 customers, 21 columns).

Reads ``../shared/data/telco-customer-churn`` (never copied into the project: the halves are written to a temporary
folder per run) and runs the command twice, as an operator would:

1. two random halves of the table (fixed seed), A against B: nothing may drift, exit 0;
2. A against B changed in two ways: ``MonthlyCharges`` × 1.5 and the customers paying by ``Mailed check`` removed
   (23% of them, the smallest side effect on the other columns of the four payment methods): exit 3, with those
   two columns the first two rows of the table.

``customerID`` is left out (``--exclude``): a different id on every row, so two halves share none and its PSI is
huge by construction. Prints both tables and exit codes; exits 1 when an expectation is not met.

    python -m bench.drift_telco [--data FILE] [--seed N] [--report DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from engine.cli import main as finscore
from engine.tables.io import read_table

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "telco-customer-churn"
DEFAULT_DATA = DATA_DIR / "WA_Fn-UseC_-Telco-Customer-Churn.csv"
ID = "customerID"
SCALED, FACTOR = "MonthlyCharges", 1.5
DROPPED, CATEGORY = "PaymentMethod", "Mailed check"


def halves(df: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows shuffled with ``seed`` and cut in two."""
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=seed)
    half = shuffled.height // 2
    return shuffled.head(half), shuffled.slice(half)


def changed(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with :data:`SCALED` × :data:`FACTOR` and the rows of :data:`CATEGORY` of :data:`DROPPED` removed."""
    return df.filter(pl.col(DROPPED) != CATEGORY).with_columns((pl.col(SCALED) * FACTOR).round(2))


def run(title: str, reference: Path, current: Path, figures: Path, report: Path | None) -> tuple[int, list[str]]:
    """The command's exit code and the columns of its table, in order."""
    print(f"== {title}")
    argv = ["drift", "--reference", str(reference), "--current", str(current), "--exclude", ID, "--json", str(figures)]
    code = finscore([*argv, *(["--report", str(report)] if report else [])])
    print(f"exit code: {code}\n")
    order = [f["column"] for f in json.loads(figures.read_text(encoding="utf-8"))["features"]] if code != 1 else []
    return code, order


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift_telco", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Telco Customer Churn CSV")
    parser.add_argument("--seed", type=int, default=7, help="seed of the random halves (default 7)")
    parser.add_argument("--report", type=Path, metavar="DIR", help="also write the HTML report of run 2 into DIR")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data} is missing: nothing to evaluate (see the data set's SOURCES.md)")
        return 0
    df = read_table(args.data)
    a, b = halves(df, args.seed)
    with tempfile.TemporaryDirectory(prefix="drift-telco-") as tmp:
        folder = Path(tmp)
        paths = {name: folder / f"{name}.csv" for name in ("half_a", "half_b", "half_b_changed")}
        for frame, name in ((a, "half_a"), (b, "half_b"), (changed(b), "half_b_changed")):
            frame.write_csv(paths[name])
        same = run("1. half A against half B", paths["half_a"], paths["half_b"], folder / "same.json", None)
        title = f"2. half A against half B with {SCALED} x {FACTOR} and no {DROPPED} = {CATEGORY!r}"
        moved = run(title, paths["half_a"], paths["half_b_changed"], folder / "moved.json", args.report)
    failures = []
    if same[0] != 0:
        failures.append(f"run 1 exited {same[0]}, expected 0")
    if moved[0] != 3:
        failures.append(f"run 2 exited {moved[0]}, expected 3")
    if sorted(moved[1][:2]) != sorted([SCALED, DROPPED]):
        failures.append(f"run 2 ranks {moved[1][:2]} first, expected {SCALED} and {DROPPED}")
    for line in failures:
        print(f"FAILED: {line}")
    if not failures:
        print(f"as expected: run 1 exit 0; run 2 exit 3 with {moved[1][0]} and {moved[1][1]} first")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
