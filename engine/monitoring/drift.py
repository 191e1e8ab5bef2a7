"""Data drift of one column between a reference table and a current one: the population stability index (PSI)
and a two-sample test, the two figures Evidently and NannyML users read first.

PSI = Σ (c − r) · ln(c / r) over bins, where r and c are the shares of the reference and the current rows in
each bin. The bins come from the reference alone, so every current table is judged against the same ruler:

- a numeric column: :data:`BINS` quantile bins of the reference, cut at its deciles (duplicate edges dropped,
  so a column of few values gets fewer bins); the two end bins are open, so a current value beyond the
  reference's range falls in them; missing values (null or NaN) are a bin of their own;
- a text, boolean or categorical column: one bin per category, the reference's first; a category seen only in
  the current table gets a bin of its own; missing values a bin of their own.

An empty bin's share is taken as :data:`EPSILON` (1e-4) on either side, so the logarithm stays finite and a
category that vanishes still counts in full: a 23% share dropping to none adds (1e-4 − 0.23) · ln(1e-4 / 0.23)
≈ 1.8 on its own.

PSI alone decides "drifted" (at or above the threshold; 0.2 is credit scoring's usual "significant shift", 0.1 a
"moderate" one). The test says how sure the difference is, which on tables of thousands of rows is nearly always
"very": the two-sample Kolmogorov-Smirnov test on the present values of a numeric column, and Pearson's
chi-squared test of the 2 × bins table of counts of a categorical one (missing values a category; no Yates
correction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
import polars as pl

from engine.errors import DataFileError

__all__ = [
    "BINS",
    "EPSILON",
    "MISSING",
    "FeatureDrift",
    "Kind",
    "categorical_drift",
    "column_kind",
    "numeric_drift",
    "psi",
]

#: Quantile bins of a numeric column (fewer where the reference's deciles repeat).
BINS = 10
#: The share an empty bin counts as, on either side.
EPSILON = 1e-4
#: The label of the bin of missing values.
MISSING = "(missing)"

Kind = Literal["numeric", "categorical", "score"]


@dataclass(frozen=True)
class FeatureDrift:
    """One row of the drift table, with the bins its PSI was taken over (what the HTML report draws)."""

    column: str
    kind: Kind
    psi: float
    #: ``"KS"`` (numeric, score) or ``"chi2"`` (categorical).
    test: str
    #: NaN when a side has no value to test.
    statistic: float
    p_value: float
    drifted: bool
    bins: tuple[str, ...] = ()
    reference_counts: tuple[int, ...] = ()
    current_counts: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The table's figures (NaN as None, so the JSON is standard)."""
        return {
            "column": self.column,
            "kind": self.kind,
            "psi": _finite(self.psi),
            "test": self.test,
            "statistic": _finite(self.statistic),
            "p_value": _finite(self.p_value),
            "drifted": self.drifted,
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two vectors of counts over the same bins; an empty bin's share counts as :data:`EPSILON`.

    >>> round(psi(np.array([50, 50]), np.array([50, 50])), 6)
    0.0
    >>> round(psi(np.array([90, 10]), np.array([50, 50])), 3)
    0.879
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.shape != c.shape or r.sum() <= 0 or c.sum() <= 0:
        msg = f"psi needs two non-empty count vectors of one shape, got {r.shape} and {c.shape}"
        raise ValueError(msg)
    r = np.maximum(r / r.sum(), EPSILON)
    c = np.maximum(c / c.sum(), EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def _kind_of(dtype: pl.DataType) -> str | None:
    if dtype.is_numeric() or dtype.is_temporal():
        return "numeric"
    if dtype in (pl.String, pl.Boolean, pl.Categorical, pl.Enum):
        return "categorical"
    if dtype == pl.Null:
        return "empty"
    return None


def column_kind(
    name: str, reference: pl.DataType, current: pl.DataType, *, sources: tuple[str, str]
) -> Literal["numeric", "categorical"]:
    """How column ``name`` is compared, from its types in the two files (``sources`` names them): numbers and
    times are numeric; text, booleans and categories categorical. A column empty in one file (type Null) takes the
    other's kind; a column of other types, or of numbers in one file and text in the other, is an error."""
    kinds = []
    for dtype, source in zip((reference, current), sources, strict=True):
        kind = _kind_of(dtype)
        if kind is None:
            msg = f"{source}: column {name!r} holds {dtype} values; drift compares numbers, times, text and booleans"
            raise DataFileError(msg)
        kinds.append(kind)
    known = {k for k in kinds if k != "empty"}
    if len(known) > 1:
        msg = (
            f"column {name!r} holds {kinds[0]} values in {sources[0]} but {kinds[1]} values in {sources[1]}; "
            "both files must read it alike"
        )
        raise DataFileError(msg)
    return "numeric" if known == {"numeric"} else "categorical"


def _as_numbers(series: pl.Series) -> pl.Series:
    """Float64 values, NaN read as missing; times as microseconds since the epoch (durations as microseconds)."""
    dtype = series.dtype
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        series = series.dt.epoch("us")
    elif isinstance(dtype, pl.Duration):
        series = series.dt.total_microseconds()
    elif dtype == pl.Time:
        series = series.to_physical()
    return series.cast(pl.Float64).fill_nan(None).alias("x")


def _edges(reference: pl.Series) -> list[float]:
    """The distinct deciles of the reference's present values (none when it has none)."""
    present = reference.drop_nulls().to_frame("x")
    if present.height == 0:
        return []
    qs = present.select(pl.col("x").quantile(i / BINS, interpolation="linear").alias(f"q{i}") for i in range(1, BINS))
    return sorted({float(v) for v in qs.row(0)})


def _bin_counts(values: pl.Series, edges: Sequence[float], n_bins: int) -> np.ndarray:
    """Rows per bin: bin i holds (edge[i-1], edge[i]], the ends are open, the last bin (index ``len(edges) + 1``)
    holds the missing values."""
    x = pl.col("x")
    inside = pl.sum_horizontal([(x > e).cast(pl.UInt32) for e in edges]) if edges else pl.lit(0, pl.UInt32)
    binned = values.to_frame("x").select(
        pl.when(x.is_null()).then(pl.lit(len(edges) + 1, pl.UInt32)).otherwise(inside).alias("bin")
    )
    per_bin = binned.group_by("bin").len()
    counts = np.zeros(n_bins, dtype=np.int64)
    counts[per_bin.get_column("bin").to_numpy()] = per_bin.get_column("len").to_numpy()
    return counts


Bins = tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]


def _bins(labels: Sequence[str], r: np.ndarray, c: np.ndarray) -> Bins:
    """Labels and counts as the plain tuples :class:`FeatureDrift` holds."""
    return tuple(labels), tuple(int(v) for v in r), tuple(int(v) for v in c)


def _edge_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["all values"]
    f = [f"{e:.4g}" for e in edges]
    return [f"≤ {f[0]}", *(f"({a}, {b}]" for a, b in pairwise(f)), f"> {f[-1]}"]


def numeric_drift(
    name: str, reference: pl.Series, current: pl.Series, *, threshold: float, kind: Kind = "numeric"
) -> FeatureDrift:
    """PSI over the reference's quantile bins, and the two-sample KS test of the present values."""
    from scipy.stats import ks_2samp

    ref, cur = _as_numbers(reference), _as_numbers(current)
    edges = _edges(ref)
    n_bins = len(edges) + 2  # the open bins between and beyond the edges, then the missing values
    r, c = _bin_counts(ref, edges, n_bins), _bin_counts(cur, edges, n_bins)
    labels = [*_edge_labels(edges), MISSING]
    if r[-1] == 0 and c[-1] == 0:  # no bin of missing values where neither side misses any
        r, c, labels = r[:-1], c[:-1], labels[:-1]
    value = psi(r, c)
    a, b = ref.drop_nulls().to_numpy(), cur.drop_nulls().to_numpy()
    if len(a) and len(b):
        result = ks_2samp(a, b)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    else:
        statistic = p_value = math.nan
    return FeatureDrift(name, kind, value, "KS", statistic, p_value, value >= threshold, *_bins(labels, r, c))


def categorical_drift(name: str, reference: pl.Series, current: pl.Series, *, threshold: float) -> FeatureDrift:
    """PSI over the categories (the reference's by frequency, then those seen only in the current table, then the
    missing values), and Pearson's chi-squared test of the 2 × categories counts."""
    from scipy.stats import chi2_contingency

    def counts(series: pl.Series, side: str) -> pl.DataFrame:
        return series.cast(pl.String).drop_nulls().to_frame("v").group_by("v").len(name=side)

    table = (
        counts(reference, "r")
        .join(counts(current, "c"), on="v", how="full", coalesce=True)
        .with_columns(pl.col("r", "c").fill_null(0))
        .sort(["r", "c", "v"], descending=[True, True, False])
    )
    labels = table.get_column("v").to_list()
    r, c = table.get_column("r").to_numpy(), table.get_column("c").to_numpy()
    missing = (reference.null_count(), current.null_count())
    if any(missing):
        labels.append(MISSING)
        r, c = np.append(r, missing[0]), np.append(c, missing[1])
    value = psi(r, c)
    test = chi2_contingency(np.vstack([r, c]), correction=False)
    return FeatureDrift(
        name,
        "categorical",
        value,
        "chi2",
        float(test.statistic),
        float(test.pvalue),
        value >= threshold,
        *_bins(labels, r, c),
    )
