"""The marketing families on a real table, the UCI Bank Marketing data (41,188 customers of a Portuguese bank, 20
columns, 10 of them text, ';'-separated and gzip-compressed as published).

Reads ``../shared/data/bank-marketing`` (never copied into the project; the working files go to a temporary
folder) and runs, as a user would:

1. ``finscore train propensity --label y --drop duration`` (the call's length is known only after it) with seeds
   42, 0 and 1: the held-out ROC-AUC of each (Moro et al. 2014 report 0.80);
2. ``finscore train segments --drop y duration``: k, silhouette and the segments' names;
3. ``finscore campaign plan`` for one offer (a term deposit: value 100, cost 5 a contact) under a budget of 5,000.
   The file has no consent column or customer id: a ``customer_id`` (the row number) is added, and a consent column
   drawn at random (70% yes, seeded) stands for the bank's record. The plan must contact nobody without consent and
   beat contacting at random within the same budget.

Prints each command's output; exits 1 when an expectation is not met.

    python -m bench.marketing_bank [--data FILE] [--budget 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from engine.cli import main as finscore
from engine.tables.io import read_table, write_table

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "bank-marketing" / "bank-additional-full.csv.gz"
)
SEEDS = (42, 0, 1)


def run(*argv: str) -> str:
    """``finscore ARGV``'s printed lines (echoed), or SystemExit with its error."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = finscore(list(argv))
    print(printed.getvalue(), end="")
    if code != 0:
        raise SystemExit(f"finscore {' '.join(argv[:2])} failed with exit code {code}")
    return printed.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget", type=float, default=5000.0)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data}: not found (the bank-marketing data set is read from ../shared/data when present)")
        return 1
    failures = []
    with tempfile.TemporaryDirectory(prefix="finscore-bank-") as tmp:
        repo = Path(tmp) / "repo"
        aucs = []
        for seed in SEEDS:
            out = run("train", "propensity", "--data", str(args.data), "--label", "y", "--drop", "duration",
                      "--seed", str(seed), "--repo", str(repo))  # fmt: skip
            aucs.append(float(re.search(r"ROC-AUC\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
        print(f"propensity held-out ROC-AUC, seeds {', '.join(map(str, SEEDS))}: {', '.join(f'{a:.4f}' for a in aucs)}")
        if min(aucs) < 0.80:
            failures.append(f"a seed's ROC-AUC is below 0.80 ({min(aucs):.4f})")
        run("train", "segments", "--data", str(args.data), "--drop", "y", "duration", "--repo", str(repo))

        table = read_table(args.data)
        consent = np.random.default_rng(7).random(table.height) < 0.7
        customers = table.with_row_index("customer_id").with_columns(
            pl.col("customer_id").cast(pl.String), pl.Series("marketing_consent", consent)
        )
        write_table(customers, Path(tmp) / "customers.parquet")
        (Path(tmp) / "offers.csv").write_text("offer,value,cost\nterm_deposit,100,5\n", encoding="utf-8")
        (Path(tmp) / "templates.csv").write_text(
            "segment,offer,template\n*,*,Dear customer: a $offer could suit you ($job).\n", encoding="utf-8"
        )
        plan_file = Path(tmp) / "plan.parquet"
        out = run("campaign", "plan", "--customers", str(Path(tmp) / "customers.parquet"), "--offers",
                  str(Path(tmp) / "offers.csv"), "--templates", str(Path(tmp) / "templates.csv"), "--budget",
                  str(args.budget), "--repo", str(repo), "--out", str(plan_file))  # fmt: skip
        plan = pl.read_parquet(plan_file)
        refused = set(customers.filter(~pl.col("marketing_consent")).get_column("customer_id").to_list())
        contacted_without = len(refused & set(plan.get_column("customer_id").to_list()))
        print(f"contacted without consent: {contacted_without}")
        if contacted_without:
            failures.append(f"{contacted_without} contacts without consent")
        lift = re.search(r"\(([\d.]+)× random's\)", out)
        if lift is None or float(lift.group(1)) <= 1.0:
            failures.append("the plan does not beat random contact")
    for failure in failures:
        print(f"NOT MET: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
