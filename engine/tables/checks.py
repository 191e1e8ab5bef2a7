"""Checking one request's columns against a model's schema: every served model's first step.

Triton hands a model a mapping of input name to array (``[batch, 1]``): FP32 numbers (NaN = missing) and
BYTES text (empty = missing). :func:`validate_columns` checks names, shapes, row counts and types, and
returns 1-D arrays; any fault is one :class:`InvalidInputError` sentence naming the input.

A request that is well formed, as nearly all are, is checked a block at a time: the number columns are
joined into one float32 block and checked for infinity once, and the text columns into one array whose
values are decoded in one pass (in Arrow for large requests, where its vectorised UTF-8 check beats a Python
loop). A served row of a customer table is mostly text, so checking column by column cost a Python call, an
array and a list per column. When a block check finds anything amiss, the column-by-column checks run
instead: they find the same fault first and name it in the same sentence as always.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from engine.errors import InvalidInputError
from engine.tables.schema import TableSchema

__all__ = ["rows_frame", "validate_columns"]

#: Text values in one request above which Arrow decodes them (below, one Python loop is faster).
ARROW_TEXT = 4096
_FP32 = {np.dtype(np.float32)}
_TEXT_KINDS = frozenset("OSU")
_BYTES = frozenset({bytes})
_STR_OR_NONE = frozenset({str, type(None)})


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


def _arrow_decoded(values: np.ndarray) -> np.ndarray | None:
    """Many bytes values as ``str | None`` through Arrow's vectorised UTF-8 check; ``None`` if one is not
    valid UTF-8."""
    import pyarrow as pa  # only large requests come here: a small-batch server never loads it
    import pyarrow.compute as pc

    raw = pa.array(values, type=pa.binary())
    try:
        out = raw.cast(pa.string()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return None
    out[pc.binary_length(raw).to_numpy() == 0] = None
    return out


def _decoded(values: np.ndarray) -> np.ndarray | None:
    """Text values (a 1-D array of any of the kinds ``OSU``) as an object array of ``str | None``, empty
    text read as missing, exactly as the column-by-column check reads them; ``None`` when a value is not
    text or not valid UTF-8 (or when bytes and ``str`` are mixed), for that check to name."""
    flat = values.tolist()
    kinds = set(map(type, flat))
    if kinds <= _BYTES:  # as Triton delivers text
        if len(flat) > ARROW_TEXT and values.dtype == object:
            return _arrow_decoded(values)
        try:
            return np.array([v.decode("utf-8") or None for v in flat], dtype=object)
        except UnicodeDecodeError:
            return None
    if kinds <= _STR_OR_NONE:
        return np.array([v or None for v in flat], dtype=object)
    return None


def _in_blocks(schema: TableSchema, columns: Mapping[str, object]) -> dict[str, np.ndarray] | None:
    """The checked columns, each a row of one number block or one text block; ``None`` when any check
    fails (or the arrays are not plain ``[rows, 1]`` / ``[rows]`` arrays alike), for the column-by-column
    checks to name the fault."""
    numbers: list[np.ndarray] = []
    texts: list[np.ndarray] = []
    for c in schema.columns:
        a = columns[c.name]
        if type(a) is not np.ndarray:
            return None
        (numbers if c.wire == "FP32" else texts).append(a)
    shapes = {a.shape for a in numbers} | {a.shape for a in texts}
    shape = shapes.pop() if len(shapes) == 1 else ()
    if not shape or not shape[0] or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        return None
    n = shape[0]
    number_rows: list[np.ndarray] = []
    text_rows: list[np.ndarray] = []
    if numbers:
        if {a.dtype for a in numbers} != _FP32:  # as Triton delivers numbers; other types are cast one by one
            return None
        block = np.concatenate(numbers).reshape(len(numbers), n)
        if np.isinf(block).any():
            return None
        number_rows = list(block)
    if texts:
        kinds = {a.dtype.kind for a in texts}
        if len(kinds) != 1 or not kinds <= _TEXT_KINDS:  # mixed kinds would be converted when joined
            return None
        decoded = _decoded(np.concatenate(texts).reshape(-1))
        if decoded is None:
            return None
        text_rows = list(decoded.reshape(len(texts), n))
    number_it, text_it = iter(number_rows), iter(text_rows)
    return {c.name: next(number_it) if c.wire == "FP32" else next(text_it) for c in schema.columns}


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
    checked = _in_blocks(schema, columns)
    # When something is amiss, column by column the first fault is found and named.
    return checked if checked is not None else _by_column(schema, columns)


def _by_column(schema: TableSchema, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The checks one column at a time, in schema order: what names a fault (and the reference the block
    checks are tested against)."""
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
