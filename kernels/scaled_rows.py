"""The scaling kernels of :mod:`kernels.scaling` fused into one Numba pass that writes the feature matrix in rows.

Polars computes one feature column per expression and a transpose then copies them into the row-major
matrix an ONNX graph or a Triton request takes: every cell is written twice, and the one-hot columns of a
category compare each row's text once per vocabulary value. Here Polars only reads each raw column once (a
number as Float64, a category as its index in the vocabulary) and :func:`scale_rows` writes every cell of
the matrix once, in rows, with the GIL released. :func:`scale_rows_ref` is its plain NumPy twin; the
threat features test that both give what the Polars expressions give.

A module of its own so that importing :mod:`kernels` does not import Numba.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
import polars as pl

__all__ = ["AS_IS", "CATEGORY", "NUMBER", "category_index", "scale_rows", "scale_rows_ref"]

#: What :func:`scale_rows` makes of a raw column: a number robustly scaled (:func:`kernels.scaling.robust_scaled`),
#: a value copied as it is (yes/no as 1/0), or a category index one-hot encoded (:func:`kernels.scaling.one_hot`).
NUMBER, AS_IS, CATEGORY = 0, 1, 2
#: Whole numbers below this have their logs looked up.
_SMALL = 1024
#: Vocabularies up to this size are coded by equality tests, larger ones by a hash look-up.
_CHAINED = 16


def category_index(name: str, vocabulary: Sequence[str]) -> pl.Expr:
    """Float64 position of each value in ``vocabulary``: ``len(vocabulary)`` for a value outside it (the
    :data:`UNSEEN` slot), -1 for a missing value (null, or empty text not in the vocabulary). What
    :func:`scale_rows` one-hot encodes exactly as :func:`one_hot` does.

    >>> pl.DataFrame({"p": ["tcp", "icmp", None, ""]}).select(category_index("p", ["tcp", "udp"])).to_series().to_list()
    [0.0, 2.0, -1.0, -1.0]
    """
    text = pl.col(name).cast(pl.String)
    if len(vocabulary) <= _CHAINED:  # a few equality tests: 3 columns of a 62.5k-row batch in 2.4 ms, not 4.5
        missing = text.is_null() if "" in vocabulary else text.is_null() | (text == "")
        code: Any = pl.when(missing).then(pl.lit(-1.0))  # a Then, then a ChainedThen
        for i, v in enumerate(vocabulary):
            code = code.when(text == v).then(pl.lit(float(i)))
        return code.otherwise(pl.lit(float(len(vocabulary)))).alias(name)
    old, new = list(vocabulary), [float(i) for i in range(len(vocabulary))]
    if "" not in vocabulary:
        old, new = [*old, ""], [*new, -1.0]
    code = text.replace_strict(old, new, default=float(len(vocabulary)), return_dtype=pl.Float64)
    return pl.when(text.is_null()).then(pl.lit(-1.0)).otherwise(code).alias(name)


def _offsets(widths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _scale_rows(
    raw: np.ndarray,
    kinds: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    widths: np.ndarray,
    offsets: np.ndarray,
    clip: float,
    out: np.ndarray,
) -> None:
    # Counts, hours and flags are small whole numbers: their logs are looked up (the same math.log's), which
    # takes a third off a batch of network events.
    small = np.empty(_SMALL)
    for k in range(_SMALL):
        small[k] = math.log(k + 1.0)
    for i in range(raw.shape[0]):
        for j in range(raw.shape[1]):
            x = raw[i, j]
            at = offsets[j]
            kind = kinds[j]
            if kind == NUMBER:
                if x != x:  # NaN: a missing number is the training median
                    out[i, at] = 0.0
                    continue
                # sign(x) * log(1 + |x|) as signed_log1p writes it; a branch is a third of np.sign's cost.
                a = abs(x)
                y = small[int(a)] if a < _SMALL and a == int(a) else math.log(a + 1.0)
                if x < 0.0:
                    y = -y
                out[i, at] = min(max((y - centers[j]) / scales[j], -clip), clip)
            elif kind == AS_IS:
                out[i, at] = x
            else:
                w = widths[j]
                for k in range(w):
                    out[i, at + k] = 0.0
                if x >= 0.0 and x < w:
                    out[i, at + int(x)] = 1.0


def scale_rows(
    raw: np.ndarray,
    kinds: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    widths: np.ndarray,
    *,
    clip: float,
) -> np.ndarray:
    """The feature matrix (float32, rows × ``widths.sum()``, row-major) of ``raw`` (float64, rows × columns)
    in one pass: the log compression, robust scaling and clipping of :func:`robust_scaled` for a
    :data:`NUMBER` column (NaN is 0), the value for an :data:`AS_IS` column, and for a :data:`CATEGORY` column
    the one-hot code of ``widths[j]`` slots of its :func:`category_index` (all zeros for -1).

    One Polars expression per feature writes each column once and a transpose writes it again; this writes
    every cell once, in rows, releasing the GIL. ``centers`` and ``scales`` matter for numbers only.

    >>> raw = np.array([[0.0, 1.0], [1e6, -1.0], [np.nan, 2.0]])
    >>> kinds, widths = np.array([NUMBER, CATEGORY]), np.array([1, 3])
    >>> scale_rows(raw, kinds, np.zeros(2), np.ones(2), widths, clip=5.0).tolist()
    [[0.0, 0.0, 1.0, 0.0], [5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    """
    kinds = np.ascontiguousarray(kinds, dtype=np.int64)
    widths = np.ascontiguousarray(widths, dtype=np.int64)
    out = np.empty((raw.shape[0], int(widths.sum())), dtype=np.float32)
    _scale_rows(
        np.asarray(raw, dtype=np.float64),
        kinds,
        np.ascontiguousarray(centers, dtype=np.float64),
        np.ascontiguousarray(scales, dtype=np.float64),
        widths,
        _offsets(widths),
        float(clip),
        out,
    )
    return out


def scale_rows_ref(
    raw: np.ndarray,
    kinds: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    widths: np.ndarray,
    *,
    clip: float,
) -> np.ndarray:
    """Plain NumPy twin of :func:`scale_rows`, a column at a time (for tests)."""
    raw = np.asarray(raw, dtype=np.float64)
    parts = []
    for j, kind in enumerate(kinds):
        x = raw[:, j]
        if kind == NUMBER:
            with np.errstate(invalid="ignore"):
                z = np.clip((np.sign(x) * np.log(np.abs(x) + 1.0) - centers[j]) / scales[j], -clip, clip)
            parts.append(np.where(np.isnan(x), 0.0, z)[:, None])
        elif kind == AS_IS:
            parts.append(x[:, None])
        else:
            parts.append((x[:, None] == np.arange(widths[j])[None, :]).astype(np.float64))
    if not parts:
        return np.empty((len(raw), 0), dtype=np.float32)
    with np.errstate(over="ignore"):  # a value past Float32's range is infinite there, as in the kernel
        return np.hstack(parts).astype(np.float32)
