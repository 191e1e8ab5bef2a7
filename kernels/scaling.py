"""Feature kernels for reconstruction models: robust scaling of numbers and one-hot codes of categories.

Written once as Polars expressions, like :mod:`kernels.tabular`, so the GPU runs them through cuDF. An
autoencoder needs every input on one scale and never a missing value: numbers are log-compressed, centred on
the training median, divided by a robust spread and clipped; a missing number is the median (0); a category
is one 1.0 among its vocabulary's columns plus one for "a value not seen in training".

>>> import polars as pl
>>> df = pl.DataFrame({"bytes": [0.0, 1e6, None], "proto": ["tcp", "icmp", None]})
>>> scaled = robust_scaled(pl.col("bytes"), center=0.0, scale=1.0, clip=5.0).alias("bytes")
>>> df.select(scaled, *one_hot("proto", ["tcp", "udp"])).rows()
[(0.0, 1.0, 0.0, 0.0), (5.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0)]
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

__all__ = ["UNSEEN", "one_hot", "one_hot_names", "robust_scaled", "signed_log1p"]

#: The suffix of the one-hot column that marks a category not seen in training.
UNSEEN = "<unseen>"


def signed_log1p(x: pl.Expr) -> pl.Expr:
    """``sign(x) * log(1 + |x|)``: byte counts and durations span ten orders of magnitude; this keeps their order
    and brings them to the scale of rates and flags. Written with ``log`` rather than ``log1p``: Polars' ``log1p``
    costs 2.5 times as much on CPU, and the two differ by less than 1e-16, far below a Float32 feature's step.

    >>> pl.DataFrame({"x": [-9.0, 0.0, 9.0]}).select(signed_log1p(pl.col("x")).round(3)).to_series().to_list()
    [-2.303, 0.0, 2.303]
    """
    return x.sign() * (x.abs() + 1.0).log()


def robust_scaled(x: pl.Expr, *, center: float, scale: float, clip: float, log: bool = True) -> pl.Expr:
    """Numbers ``x`` as Float32: ``clip((signed_log1p(x) - center) / scale)``; missing and NaN are 0.

    ``center`` and ``scale`` are the median and spread of the (log-compressed) training values; ``scale``
    must be positive. Clipping bounds what one extreme value can contribute to a reconstruction error.
    """
    x = x.cast(pl.Float64)
    x = pl.when(x.is_nan()).then(None).otherwise(x)
    if log:
        x = signed_log1p(x)
    z = ((x - center) / scale).clip(-clip, clip)
    return z.fill_null(0.0).cast(pl.Float32)


def one_hot_names(name: str, vocabulary: Sequence[str]) -> list[str]:
    """The feature names :func:`one_hot` produces, in its order."""
    return [f"{name}={v}" for v in vocabulary] + [f"{name}={UNSEEN}"]


def one_hot(name: str, vocabulary: Sequence[str]) -> list[pl.Expr]:
    """One Float32 column per vocabulary value, plus one for a value outside it; a missing value is all zeros."""
    text = pl.col(name).cast(pl.String)
    given = text.is_not_null() & (text != "")
    known = text.is_in(list(vocabulary))
    names = one_hot_names(name, vocabulary)
    cols = [(text == v).fill_null(False).cast(pl.Float32).alias(n) for v, n in zip(vocabulary, names, strict=False)]
    cols.append((given & ~known).fill_null(False).cast(pl.Float32).alias(names[-1]))
    return cols
