"""Checking one request's columns against a model's schema: every served model's first step.

Triton hands a model a mapping of input name to array (``[batch, 1]``): FP32 numbers (NaN = missing) and
BYTES text (empty = missing). :func:`validate_columns` checks names, shapes, row counts and types, and
returns 1-D arrays; any fault is one :class:`InvalidInputError` sentence naming the input.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from engine.errors import InvalidInputError
from engine.tables.schema import TableSchema

__all__ = ["rows_frame", "validate_columns"]


def _as_rows(name: str, value: object, n: int | None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        msg = f"input {name!r} must have shape [batch, 1], got {list(arr.shape)}"
        raise InvalidInputError(msg)
    if n is not None and len(arr) != n:
        msg = f"input {name!r} has {len(arr)} rows but other inputs have {n}"
        raise InvalidInputError(msg)
    return arr


def _numbers(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "fiub":
        msg = f"input {name!r} must be FP32 numbers, got {arr.dtype.name} values"
        raise InvalidInputError(msg)
    out = arr.astype(np.float32, copy=False)
    bad = np.isinf(out)
    if bad.any():
        msg = f"input {name!r} has an infinite value at row {int(np.argmax(bad))}; use NaN for a missing value"
        raise InvalidInputError(msg)
    return out


def _texts(name: str, arr: np.ndarray) -> list[str | None]:
    if arr.dtype.kind not in "OSU":
        msg = f"input {name!r} must be BYTES (text), got {arr.dtype.name} values"
        raise InvalidInputError(msg)
    out: list[str | None] = []
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                msg = f"input {name!r} row {i} is not valid UTF-8 text"
                raise InvalidInputError(msg) from None
        elif v is not None and not isinstance(v, str):
            msg = f"input {name!r} row {i} must be text, got {type(v).__name__}"
            raise InvalidInputError(msg)
        out.append(v if v else None)
    return out


def validate_columns(schema: TableSchema, columns: Mapping[str, object], *, model: str) -> dict[str, np.ndarray]:
    """A request's columns as 1-D arrays (float32 numbers, object arrays of ``str | None`` text).

    Every schema column must be present and nothing else; all columns must have the same number of rows.
    """
    names = schema.names
    missing = [c for c in names if c not in columns]
    if missing:
        msg = f"input {missing[0]!r} is missing ({len(missing)} of {len(names)} inputs absent)"
        raise InvalidInputError(msg)
    if len(columns) != len(names):
        known = set(names)
        unknown = [k for k in columns if k not in known]
        msg = f"unexpected input {unknown[0]!r}: model {model} has no input of that name"
        raise InvalidInputError(msg)
    n: int | None = None
    out: dict[str, np.ndarray] = {}
    for col in schema.columns:
        arr = _as_rows(col.name, columns[col.name], n)
        n = len(arr)
        if col.wire == "FP32":
            out[col.name] = _numbers(col.name, arr)
        else:
            out[col.name] = np.array(_texts(col.name, arr), dtype=object)
    if not n:
        msg = "the request has no rows"
        raise InvalidInputError(msg)
    return out


def rows_frame(schema: TableSchema, rows: Mapping[str, np.ndarray]) -> pl.DataFrame:
    """Validated rows as a frame with the wire dtypes (Float32 numbers, String text)."""
    return pl.DataFrame(
        [
            pl.Series(c.name, rows[c.name], dtype=pl.Float32)
            if c.wire == "FP32"
            else pl.Series(c.name, list(rows[c.name]), dtype=pl.String)  # an object array of only None fails
            for c in schema.columns
        ]
    )
