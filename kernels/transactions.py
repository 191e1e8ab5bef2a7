"""Card-transaction features, written once as Polars lazy expressions (one Numba kernel for window maxima).

Every feature of a transaction is computed from that transaction and the ones that arrived before it, so
the same numbers can be kept up one authorization at a time by a server (``engine.families.fraud.state``):

- per card, for each window ``w`` (1 h, 1 d, 7 d, 30 d): the count, sum, mean and maximum of the amounts
  of the card's transactions with ``time > t - w``, this one included. Transactions with the same time
  count in arrival order, as a server sees them (a rolling window by time would let a transaction see a
  later one stamped in the same microsecond);
- per card: seconds since the card's previous transaction, and the amount's z-score against all of the
  card's earlier amounts (sample standard deviation; missing before two earlier amounts);
- per terminal, for each window ``w`` (1 d, 7 d, 30 d): the number of transactions and the fraud rate
  over ``(t - delay - w, t - delay]``. Labels arrive late; the delay keeps a label out of every feature
  computed before it could have been known;
- the hour of the day and day of the week (UTC).

Inputs are canonical columns: ``card`` and ``terminal`` (any type), ``amount`` (Float64), ``time``
(Int64, microseconds since the Unix epoch, UTC) and, for the terminal features, ``label`` (0/1, null
when unknown, read as 0). ``_row`` (the arrival order) breaks ties in time.

>>> import polars as pl
>>> tx = pl.LazyFrame({"card": [7, 7, 7], "terminal": [1, 1, 1], "amount": [10.0, 30.0, 20.0],
...                    "time": [0, 60_000_000, 7_200_000_000], "label": [0, 1, 0]})
>>> f = transaction_features(tx, delay_us=3_600_000_000).collect()
>>> f.select("card_count_1h", "card_sum_1h", "card_max_1d", "seconds_since_previous", "terminal_risk_1d").rows()
[(1, 10.0, 10.0, None, 0.0), (2, 40.0, 30.0, 60.0, 0.0), (1, 20.0, 30.0, 7140.0, 0.5)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
import polars as pl

__all__ = [
    "CARD_WINDOWS",
    "DAY_US",
    "TERMINAL_WINDOWS",
    "feature_names",
    "rfm",
    "transaction_features",
    "window_max",
    "window_max_ref",
]

SECOND_US = 1_000_000
HOUR_US = 3600 * SECOND_US
DAY_US = 24 * HOUR_US
#: Card windows: name → length in microseconds.
CARD_WINDOWS: Mapping[str, int] = {"1h": HOUR_US, "1d": DAY_US, "7d": 7 * DAY_US, "30d": 30 * DAY_US}
#: Terminal windows (before the label delay): name → length in microseconds.
TERMINAL_WINDOWS: Mapping[str, int] = {"1d": DAY_US, "7d": 7 * DAY_US, "30d": 30 * DAY_US}


def feature_names() -> list[str]:
    """The feature columns :func:`transaction_features` adds, in model order."""
    names = ["amount", "hour", "weekday"]
    for w in CARD_WINDOWS:
        names += [f"card_count_{w}", f"card_sum_{w}", f"card_mean_{w}", f"card_max_{w}"]
    names += ["seconds_since_previous", "amount_zscore"]
    for w in TERMINAL_WINDOWS:
        names += [f"terminal_count_{w}", f"terminal_risk_{w}"]
    return names


@numba.njit(cache=True)
def window_max(starts: np.ndarray, first: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Maximum of ``amount[first[i]..i]`` for every row ``i``, where rows are grouped (``starts``: the first
    row of each group, ascending, ``first[i]`` ≥ the group's first row) and ``first`` never decreases within
    a group. A monotonic deque keeps it linear.

    >>> window_max(np.array([0, 3]), np.array([0, 0, 1, 3, 3]), np.array([1.0, 3.0, 2.0, 5.0, 4.0])).tolist()
    [1.0, 3.0, 3.0, 5.0, 5.0]
    """
    n = len(amount)
    out = np.empty(n, dtype=np.float64)
    queue = np.empty(n, dtype=np.int64)
    for g in range(len(starts)):
        lo = starts[g]
        hi = starts[g + 1] if g + 1 < len(starts) else n
        head = 0
        tail = 0
        for i in range(lo, hi):
            while tail > head and amount[queue[tail - 1]] <= amount[i]:
                tail -= 1
            queue[tail] = i
            tail += 1
            while queue[head] < first[i]:
                head += 1
            out[i] = amount[queue[head]]
    return out


def window_max_ref(starts: np.ndarray, first: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Plain NumPy twin of :func:`window_max` (quadratic; for tests)."""
    del starts  # ``first`` already bounds each window inside its group
    return np.array([amount[first[i] : i + 1].max() for i in range(len(amount))], dtype=np.float64)


def _group_starts(keys: pl.Series) -> np.ndarray:
    """First row of each run of equal keys in a sorted column."""
    change = keys.ne_missing(keys.shift(1)).fill_null(True).to_numpy()
    return np.flatnonzero(change).astype(np.int64)


def _card_maxima(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``card_max_<w>`` to a frame sorted by card and arrival, which holds ``_pos`` and ``_first_<w>``."""
    starts = _group_starts(frame["card"])
    amount = frame["amount"].to_numpy().astype(np.float64, copy=False)
    # search_sorted ran per card: its positions are within the card; the kernel wants rows of the frame.
    offsets = np.repeat(starts, np.diff(np.r_[starts, len(frame)]))
    return frame.with_columns(
        pl.Series(
            f"card_max_{w}", window_max(starts, offsets + frame[f"_first_{w}"].to_numpy().astype(np.int64), amount)
        )
        for w in CARD_WINDOWS
    )


def _card_exprs() -> list[pl.Expr]:
    i = pl.int_range(pl.len(), dtype=pl.Int64).over("card")
    t = pl.col("time")
    return [
        i.alias("_pos"),
        pl.col("amount").cum_sum().over("card").alias("_cs"),
        (pl.col("amount") ** 2).cum_sum().over("card").alias("_cq"),
        *(
            t.search_sorted(t - size, side="right").over("card").cast(pl.Int64).alias(f"_first_{w}")
            for w, size in CARD_WINDOWS.items()
        ),
        ((t - t.shift(1).over("card")) / SECOND_US).alias("seconds_since_previous"),
    ]


def _card_window_exprs() -> list[pl.Expr]:
    before = pl.col("_cs") - pl.col("amount")  # sum of the card's earlier amounts
    exprs: list[pl.Expr] = []
    for w in CARD_WINDOWS:
        first = pl.col(f"_first_{w}")
        count = pl.col("_pos") - first + 1
        total = pl.col("_cs") - before.gather(first).over("card")
        exprs += [count.alias(f"card_count_{w}"), total.alias(f"card_sum_{w}"), (total / count).alias(f"card_mean_{w}")]
    n = pl.col("_pos").cast(pl.Float64)  # earlier transactions of the card
    sq_before = pl.col("_cq") - pl.col("amount") ** 2
    mean = before / n
    var = (sq_before - before * before / n) / (n - 1)
    exprs.append(
        pl.when((n >= 2) & (var > 0))
        .then((pl.col("amount") - mean) / var.sqrt())
        .otherwise(None)
        .alias("amount_zscore")
    )
    return exprs


def _terminal_exprs(delay_us: int) -> list[pl.Expr]:
    t = pl.col("time")
    frauds_upto = pl.col("label").fill_null(0).cast(pl.Int64).cum_sum().over("terminal")

    def frauds_before(k: pl.Expr) -> pl.Expr:  # frauds among the terminal's first k transactions
        return pl.when(k > 0).then(frauds_upto.gather((k - 1).clip(0)).over("terminal")).otherwise(0)

    exprs: list[pl.Expr] = []
    end = t.search_sorted(t - delay_us, side="right").over("terminal").cast(pl.Int64)
    frauds_to_end = frauds_before(end)  # every window ends at the delay
    for w, size in TERMINAL_WINDOWS.items():
        start = t.search_sorted(t - delay_us - size, side="right").over("terminal").cast(pl.Int64)
        count = end - start
        frauds = frauds_to_end - frauds_before(start)
        exprs += [
            count.alias(f"terminal_count_{w}"),
            pl.when(count > 0).then(frauds / count).otherwise(0.0).alias(f"terminal_risk_{w}"),
        ]
    return exprs


def transaction_features(tx: pl.LazyFrame, *, delay_us: int, engine: Any = "cpu") -> pl.LazyFrame:
    """The features of every transaction in ``tx`` (rows in their original order, features appended).

    ``delay_us`` (> 0) is how long a label takes to arrive. ``engine`` is what ``collect`` runs on (a
    ``pl.GPUEngine`` for cuDF); the window maxima run in Numba between the two Polars passes.
    """
    if delay_us <= 0:
        msg = f"the label delay must be positive (no label is known when its transaction is scored), got {delay_us} µs"
        raise ValueError(msg)
    if "label" not in tx.collect_schema().names():
        tx = tx.with_columns(pl.lit(None, dtype=pl.Int8).alias("label"))
    # Only the columns the kernels read travel through the two sorts; the features are put back in row order
    # alone and set beside the input (reordering every input column, text ids included, cost half the time).
    by_card = (
        tx.select("card", "terminal", "amount", "time", "label")
        .with_row_index("_row")
        .with_columns(pl.col("amount").cast(pl.Float64), pl.col("time").cast(pl.Int64))
        .sort("card", "time", "_row")
        .with_columns(_card_exprs())
        .with_columns(_card_window_exprs())
        .collect(engine=engine)
    )
    by_card = _card_maxima(by_card)
    us = pl.col("time")
    features = (
        by_card.lazy()
        .sort("terminal", "time", "_row")
        .with_columns(_terminal_exprs(delay_us))
        .with_columns(
            ((us // HOUR_US) % 24).cast(pl.Int64).alias("hour"),
            ((us // DAY_US + 3) % 7).cast(pl.Int64).alias("weekday"),  # 1970-01-01 was a Thursday (3)
        )
        .select("_row", *(n for n in feature_names() if n != "amount"))
        .sort("_row")
        .drop("_row")
    )
    out = pl.concat([tx.with_columns(pl.col("amount").cast(pl.Float64)), features], how="horizontal")
    return out


def rfm(tx: pl.LazyFrame, *, as_of_us: int, customer: str = "card", days: int = 90) -> pl.LazyFrame:
    """Recency, frequency and monetary value per customer, as of ``as_of_us`` (transactions after it are
    ignored): days since the last transaction, and the count, sum and mean of amounts over ``days`` days.
    A churn table can join these on its customer id.

    >>> tx = pl.LazyFrame({"card": [1, 1, 2], "amount": [5.0, 7.0, 3.0], "time": [0, DAY_US, 2 * DAY_US]})
    >>> rfm(tx, as_of_us=3 * DAY_US).sort("card").collect().rows()
    [(1, 2.0, 2, 12.0, 6.0), (2, 1.0, 1, 3.0, 3.0)]
    """
    since = as_of_us - days * DAY_US
    seen = tx.filter(pl.col("time") <= as_of_us)
    recent = pl.col("time") > since
    return seen.group_by(customer).agg(
        ((as_of_us - pl.col("time").max()) / DAY_US).alias("recency_days"),
        recent.sum().cast(pl.Int64).alias("frequency"),
        pl.col("amount").filter(recent).sum().alias("monetary_sum"),
        pl.col("amount").filter(recent).mean().alias("monetary_mean"),
    )
