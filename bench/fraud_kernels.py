"""Card-transaction features: finscore's ``kernels.transactions.transaction_features`` beside pandas groupby-rolling.

``python -m bench.fraud_kernels`` generates ``--rows`` card transactions in memory (vectorised NumPy: ``--cards``
cards with gamma-distributed activity, ``rows // 500`` terminals, log-normal amounts, uniform times over 30 days,
~1% random labels; ``engine.demo.transactions`` is not used because its fraud injection grows with rows x cards and
takes many minutes at 10M rows), already in the kernel's canonical columns (``card, terminal, amount, time,
label``). Then, in the same run and on the same rows, it times:

- finscore: ``transaction_features(frame.lazy(), delay_us=7 days).collect()`` (Numba warmed up beforehand on a
  tiny frame; nothing is converted inside the timed region);
- the baseline, the Fraud Detection Handbook's recipe with pandas: sort, ``groupby("card")[...].rolling("1d")``
  ``.count/.sum/.mean/.max`` on a datetime index for each window, ``groupby.diff`` for the seconds since the
  previous transaction, an expanding mean/std of the shifted amounts for the z-score, and for terminals the
  rolling (delay + w) minus rolling (delay) label sums and counts; rows put back in arrival order by row id.
  Building the pandas frame (``datetime64`` times) is not timed.

Both compute the same features; a sanity check prints, per feature, the share of rows (matched by row id) on
which the two agree (pandas' time rolling and finscore can differ on same-time transactions). Figures are
printed, never asserted on. Peak RSS is the process's high-water mark after each path (cumulative).

    python -m bench.fraud_kernels [--rows 10000000] [--cards N] [--repeats 1] [--skip-pandas] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from bench.report import machine_facts, machine_line, save_figures
from kernels.transactions import CARD_WINDOWS, DAY_US, TERMINAL_WINDOWS, transaction_features

__all__ = ["baseline_features", "generate", "main", "run"]

DAYS = 30
DELAY_DAYS = 7
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
#: Features compared between the two paths.
CHECKED = [
    "card_count_1h", "card_count_1d", "card_sum_1d", "card_mean_7d", "card_max_30d", "seconds_since_previous",
    "amount_zscore", "terminal_count_7d", "terminal_risk_7d", "hour", "weekday",
]  # fmt: skip


def generate(rows: int, cards: int, *, seed: int = 0) -> pl.DataFrame:
    """``rows`` transactions in time order: ``card, terminal`` (Int32), ``amount`` (Float64), ``time`` (Int64 µs),
    ``label`` (Int8, ~1% ones)."""
    rng = np.random.default_rng(seed)
    activity = np.cumsum(rng.gamma(2.0, size=cards))
    card = np.searchsorted(activity, rng.random(rows) * activity[-1]).astype(np.int32)
    return pl.DataFrame(
        {
            "card": card,
            "terminal": rng.integers(0, max(1, rows // 500), rows, dtype=np.int32),
            "amount": np.round(rng.lognormal(3.5, 1.0, rows), 2),
            "time": START_US + np.sort(rng.integers(0, DAYS * DAY_US, rows)),
            "label": (rng.random(rows) < 0.01).astype(np.int8),
        }
    )


def baseline_features(tx: pd.DataFrame, *, delay_days: int = DELAY_DAYS) -> pd.DataFrame:
    """The same features with pandas groupby-rolling (``tx``: canonical columns, ``time`` as ``datetime64``);
    rows in ``tx``'s order. Group results come out group by group, each in the sorted frame's order."""
    n = len(tx)
    out: dict[str, np.ndarray] = {}

    def put(name: str, row: np.ndarray, values: Any) -> None:  # back to arrival order by row id
        full = np.empty(n, dtype=np.float64)
        full[row] = np.asarray(values, dtype=np.float64)
        out[name] = full

    df = tx.assign(row=np.arange(n)).sort_values(["card", "time", "row"]).set_index("time")
    row = df["row"].to_numpy()
    by_card = df.groupby("card")["amount"]
    for w, size in CARD_WINDOWS.items():
        rolling = by_card.rolling(pd.Timedelta(size, unit="us"))
        for stat in ("count", "sum", "mean", "max"):
            put(f"card_{stat}_{w}", row, getattr(rolling, stat)().to_numpy())
    seconds = df.index.to_series().groupby(df["card"].to_numpy()).diff().dt.total_seconds()
    put("seconds_since_previous", row, seconds.to_numpy())
    earlier = by_card.shift(1).groupby(df["card"].to_numpy()).expanding()
    with np.errstate(divide="ignore", invalid="ignore"):  # a card whose earlier amounts are all equal
        put("amount_zscore", row, (df["amount"].to_numpy() - earlier.mean().to_numpy()) / earlier.std().to_numpy())

    df = tx.assign(row=np.arange(n)).sort_values(["terminal", "time", "row"]).set_index("time")
    row = df["row"].to_numpy()
    by_terminal = df.groupby("terminal")["label"]
    delayed = by_terminal.rolling(pd.Timedelta(days=delay_days))
    frauds_delay, count_delay = delayed.sum().to_numpy(), delayed.count().to_numpy()
    for w, size in TERMINAL_WINDOWS.items():
        rolling = by_terminal.rolling(pd.Timedelta(days=delay_days) + pd.Timedelta(size, unit="us"))
        count = rolling.count().to_numpy() - count_delay
        frauds = rolling.sum().to_numpy() - frauds_delay
        put(f"terminal_count_{w}", row, count)
        with np.errstate(divide="ignore", invalid="ignore"):
            put(f"terminal_risk_{w}", row, np.where(count > 0, frauds / count, 0.0))
    return tx.assign(hour=tx["time"].dt.hour, weekday=tx["time"].dt.weekday, **out)


def _timed(work: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    seconds: list[float] = []
    result = None
    for _ in range(repeats):
        result = None  # let the previous repeat's output go first
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _agreement(ours: pl.DataFrame, theirs: pd.DataFrame) -> dict[str, float]:
    """Share of rows (same row id: both frames are in arrival order) on which each checked feature agrees."""
    shares = {}
    for name in CHECKED:
        a = ours[name].cast(pl.Float64).to_numpy()
        b = theirs[name].to_numpy(dtype=np.float64)
        b = np.where(np.isfinite(b), b, np.nan)  # a zero std: pandas divides, finscore leaves the z-score missing
        shares[name] = float(np.isclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True).mean())
    return shares


def run(*, rows: int, cards: int, repeats: int = 1, skip_pandas: bool = False, seed: int = 0) -> dict[str, Any]:
    """Generate, time both paths, compare them; the figures as a JSON-ready dict."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    tx = generate(rows, cards, seed=seed)
    generated = time.perf_counter() - start
    delay_us = DELAY_DAYS * DAY_US
    transaction_features(generate(1000, 50, seed=seed + 1).lazy(), delay_us=delay_us).collect()  # Numba warm-up

    seconds, ours = _timed(lambda: transaction_features(tx.lazy(), delay_us=delay_us).collect(), repeats)
    figures: dict[str, Any] = {
        "rows": rows,
        "cards": int(tx["card"].n_unique()),
        "terminals": int(tx["terminal"].n_unique()),
        "days": DAYS,
        "label_delay_days": DELAY_DAYS,
        "repeats": repeats,
        "generate_seconds": generated,
        "finscore": {"seconds": statistics.median(seconds), "all_seconds": seconds, "peak_rss_gib": _peak_rss_gib()},
    }
    figures["finscore"]["rows_per_second"] = rows / figures["finscore"]["seconds"]
    if not skip_pandas:
        frame = tx.to_pandas()
        frame["time"] = pd.to_datetime(frame["time"], unit="us", utc=True)
        seconds, theirs = _timed(lambda: baseline_features(frame), repeats)
        median = statistics.median(seconds)
        figures["pandas"] = {
            "seconds": median,
            "all_seconds": seconds,
            "rows_per_second": rows / median,
            "peak_rss_gib": _peak_rss_gib(),
        }
        figures["speedup"] = median / figures["finscore"]["seconds"]
        figures["agreement"] = _agreement(ours, theirs)
    versions = {p: dist_version(p) for p in ("polars", "numba", "pandas", "numpy")}
    figures["machine"] = machine_facts(load_before, **versions)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command line: measure, print the figures, optionally write them as JSON.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``); see the module docstring.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.fraud_kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="transactions (default 10,000,000)")
    parser.add_argument("--cards", type=int, help="cards (default rows // 100: ~100 transactions a card)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per path; the median is shown (default 1)")
    parser.add_argument("--skip-pandas", action="store_true", help="time finscore only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated transactions")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    cards = args.cards if args.cards is not None else max(1, args.rows // 100)
    if args.rows < 1 or cards < 1 or args.repeats < 1:
        parser.error("--rows, --cards and --repeats must be positive")
    f = run(rows=args.rows, cards=cards, repeats=args.repeats, skip_pandas=args.skip_pandas, seed=args.seed)

    print(
        f"{f['rows']:,} transactions, {f['cards']:,} cards, {f['terminals']:,} terminals over {f['days']} days, "
        f"label delay {f['label_delay_days']} days (generated in {f['generate_seconds']:.1f} s, not timed)"
    )
    paths = [("finscore transaction_features", f["finscore"])]
    if "pandas" in f:
        paths.append(("pandas groupby-rolling", f["pandas"]))
    for name, p in paths:
        print(
            f"{name:<30} {p['seconds']:8.2f} s  {p['rows_per_second']:>12,.0f} rows/s  "
            f"peak RSS so far {p['peak_rss_gib']:.1f} GiB"
        )
    if "pandas" in f:
        print(f"speed-up: finscore is {f['speedup']:.1f}x pandas")
        print("agreement (same row id): " + ", ".join(f"{k} {v:.2%}" for k, v in f["agreement"].items()))
    print(
        f"seconds: feature computation only, median of {f['repeats']}; input already in canonical columns "
        "(no conversion timed), pandas frame built beforehand"
    )
    print(machine_line(f["machine"]))
    save_figures(f, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
