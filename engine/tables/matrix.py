"""Small-batch features that equal the Polars kernels exactly, at a fraction of the per-call cost.

A one-row request pays Polars' fixed cost per call (frame construction, one expression per column) several
times over the work itself. :class:`OnlineFeatures` keeps the kernels as the single definition and
memoises them:

- a text column's kernel is evaluated once, at load, over the values it knows (the column's vocabulary, or
  the yes/no spellings) plus missing; a request looks its values up, and any value outside the table is
  evaluated by the kernel itself, at request time (never cached: request text is unbounded);
- a number column is passed through only if its kernel proves to be the identity (NaN as missing) on a
  probe of float32 values at load; otherwise the kernel runs.

Tests compare this path with the Polars path on random requests, value for value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from engine.tables.checks import rows_frame
from engine.tables.schema import Column, TableSchema
from kernels import BOOLEAN_SPELLINGS

__all__ = ["OnlineFeatures", "polars_matrix"]

_PROBE = np.array([0.0, 1.0, -1.5, 2.5e-3, 3.4e38, -3.4e38, 1e-40, np.nan], dtype=np.float32)


def polars_matrix(
    schema: TableSchema, exprs: list[pl.Expr], columns: Mapping[str, np.ndarray], *, engine: object
) -> np.ndarray:
    """The features of validated request columns through the Polars kernels (any batch size, CPU or GPU)."""
    return schema.features(rows_frame(schema, columns), engine=engine, exprs=exprs)


def _kernel(column: Column, values: list[object], dtype: pl.DataType) -> np.ndarray:
    frame = pl.DataFrame([pl.Series(column.name, values, dtype=dtype)])
    out = frame.select(column.expr(dtype)).to_series().cast(pl.Float32).to_numpy()
    return np.asarray(out, dtype=np.float32)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(np.nan_to_num(a), np.nan_to_num(b)))


class OnlineFeatures:
    """Memoised kernels of ``schema`` for batches of at most ``max_rows`` rows."""

    def __init__(self, schema: TableSchema, *, max_rows: int = 64) -> None:
        self.schema = schema
        self.max_rows = max_rows
        self._tables: dict[str, dict[object, float]] = {}
        self._identity: set[str] = set()
        for col in schema.columns:
            if col.wire == "BYTES":
                domain: list[object] = [*(col.vocabulary or BOOLEAN_SPELLINGS), None]
                codes = _kernel(col, domain, pl.String())
                self._tables[col.name] = dict(zip(domain, codes.tolist(), strict=True))
            elif _same(_kernel(col, _PROBE.tolist(), pl.Float32()), _PROBE):
                self._identity.add(col.name)
        # The text columns are looked up together, in one pass over all their values: a served row is mostly
        # text, and a pass per column cost more than its look-ups.
        positions = {c.name: j for j, c in enumerate(schema.columns)}
        self._text = [c for c in schema.columns if c.name in self._tables]
        self._text_at = [positions[c.name] for c in self._text]
        self._text_tables = [self._tables[c.name] for c in self._text]
        self._others = [(j, c) for j, c in enumerate(schema.columns) if c.name not in self._tables]

    def matrix(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The feature matrix (float32, rows × columns) of validated request columns."""
        n = len(columns[self.schema.columns[0].name])
        out = np.empty((n, len(self.schema.columns)), dtype=np.float32)
        for j, col in self._others:
            if col.name in self._identity:
                out[:, j] = columns[col.name]
            else:
                out[:, j] = _kernel(col, list(columns[col.name]), pl.Float32())
        if self._text:
            values = np.concatenate([columns[c.name] for c in self._text]).reshape(len(self._text), n).tolist()
            found = [table.get(v) for table, row in zip(self._text_tables, values, strict=True) for v in row]
            if None in found:  # a value outside a table (codes are floats, never None)
                self._compute(found, values, n)
            out[:, self._text_at] = np.array(found, dtype=np.float32).reshape(len(self._text), n).T
        return out

    def _compute(self, found: list[float | None], values: list[list[object]], n: int) -> None:
        """Fill the gaps of ``found`` (column-major) with the kernel of each column, evaluated on its values
        outside the table (never cached: request text is unbounded)."""
        for k, col in enumerate(self._text):
            misses = [i for i in range(k * n, (k + 1) * n) if found[i] is None]
            if misses:
                computed = _kernel(col, [values[k][i - k * n] for i in misses], pl.String())
                for i, code in zip(misses, computed.tolist(), strict=True):
                    found[i] = code
