"""The threat model's inputs: a table schema plus the scaling learned from normal rows.

Numbers are log-compressed and robustly scaled (median and inter-quartile spread of the training rows),
yes/no columns are 0/1, categories are one-hot with a slot for values not seen in training (see
:mod:`kernels.scaling`). Each feature remembers the raw column it came from, so reconstruction errors can
be reported per column (``top_features``).

The Polars expressions are the definition (and what the GPU runs); on CPU a frame's matrix is written by
the fused kernel of :mod:`kernels.scaled_rows`, which the tests hold to the expressions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from engine.tables.schema import Column, TableSchema
from kernels import boolean, numeric, one_hot, one_hot_names, parse_number, robust_scaled, signed_log1p

__all__ = ["CLIP", "ThreatFeatures"]

#: Scaled numbers are clipped to ±CLIP: one absurd value cannot drown the other columns' errors.
CLIP = 10.0


def _raw_number(col: Column, source: pl.DataType | None) -> pl.Expr:
    """The column as numbers, whatever it arrives as: served Float32, table numbers, CSV text, yes/no text."""
    if col.kind == "boolean" and (col.wire == "BYTES" or source == pl.Boolean):
        return boolean(col.name)
    if source is not None and source == pl.String:
        return parse_number(col.name)
    return numeric(col.name)


@dataclass(frozen=True)
class ThreatFeatures:
    """How raw columns become the autoencoder's inputs; fitted on normal rows by :meth:`fit`."""

    schema: TableSchema
    #: Per number column: (center, scale) of its log-compressed training values.
    scaling: Mapping[str, tuple[float, float]]
    clip: float = CLIP
    _exprs: dict[tuple[tuple[str, str], ...], list[pl.Expr]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _raw: dict[tuple[tuple[str, str], ...], list[pl.Expr]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def fit(cls, schema: TableSchema, df: pl.DataFrame, *, engine: object = "cpu") -> ThreatFeatures:
        """Learn the median and spread of each number column from ``df`` (the normal training rows)."""
        numbers = [c for c in schema.columns if c.kind == "numeric"]
        if not numbers:
            return cls(schema, {})
        dtypes = df.schema
        logs = (
            df.lazy()
            .select(signed_log1p(_raw_number(c, dtypes.get(c.name)).cast(pl.Float64)).alias(c.name) for c in numbers)
            .collect(engine=engine)  # type: ignore[call-overload]
        )
        scaling: dict[str, tuple[float, float]] = {}
        for c in numbers:
            v = logs.get_column(c.name).fill_nan(None).drop_nulls().to_numpy()
            if len(v) == 0:
                scaling[c.name] = (0.0, 1.0)
                continue
            q1, median, q3 = np.percentile(v, [25, 50, 75])
            # Zero-inflated counts have no inter-quartile spread; their standard deviation still tells
            # how rare a non-zero value is among normal rows.
            spread = q3 - q1 if q3 > q1 else float(np.std(v))
            scaling[c.name] = (float(median), float(spread) if spread > 1e-12 else 1.0)
        return cls(schema, scaling)

    @property
    def names(self) -> list[str]:
        """Feature names: number and yes/no columns keep their names; categories become ``col=value``."""
        out: list[str] = []
        for c in self.schema.columns:
            out.extend(one_hot_names(c.name, c.vocabulary) if c.kind == "categorical" else [c.name])
        return out

    def groups(self) -> np.ndarray:
        """A matrix (features × raw columns) that averages features into their raw column: a category's
        one-hot columns share its weight, so a column with many values is not favoured by ``top_features``."""
        owner: list[int] = []
        for j, c in enumerate(self.schema.columns):
            owner.extend([j] * (len(c.vocabulary) + 1 if c.kind == "categorical" else 1))
        g = np.zeros((len(owner), len(self.schema.columns)), dtype=np.float32)
        g[np.arange(len(owner)), owner] = 1.0
        return g / g.sum(axis=0, keepdims=True)

    def expressions(self, dtypes: Mapping[str, pl.DataType]) -> list[pl.Expr]:
        """The feature kernels for a frame whose columns have ``dtypes``."""
        exprs: list[pl.Expr] = []
        for c in self.schema.columns:
            if c.kind == "categorical":
                exprs.extend(one_hot(c.name, c.vocabulary))
            elif c.kind == "boolean":
                exprs.append(_raw_number(c, dtypes.get(c.name)).fill_null(0.0).cast(pl.Float32).alias(c.name))
            else:
                center, scale = self.scaling[c.name]
                raw = _raw_number(c, dtypes.get(c.name))
                exprs.append(robust_scaled(raw, center=center, scale=scale, clip=self.clip).alias(c.name))
        return exprs

    def raw_expressions(self, dtypes: Mapping[str, pl.DataType]) -> list[pl.Expr]:
        """One Float64 column per raw column, what :func:`kernels.scaled_rows.scale_rows` scales: numbers as
        :meth:`expressions` reads them (missing is NaN), yes/no as their feature, categories as their index."""
        from kernels.scaled_rows import category_index

        exprs: list[pl.Expr] = []
        for c in self.schema.columns:
            if c.kind == "categorical":
                exprs.append(category_index(c.name, c.vocabulary))
            elif c.kind == "boolean":
                exprs.append(_raw_number(c, dtypes.get(c.name)).fill_null(0.0).cast(pl.Float64).alias(c.name))
            else:
                exprs.append(_raw_number(c, dtypes.get(c.name)).cast(pl.Float64).alias(c.name))
        return exprs

    def fused_matrix(self, df: pl.DataFrame) -> np.ndarray:
        """:meth:`matrix` on CPU in one pass per row (:func:`kernels.scaled_rows.scale_rows`)."""
        from kernels.scaled_rows import AS_IS, CATEGORY, NUMBER, scale_rows

        key = self._key(df.schema)
        if key not in self._raw:
            self._raw[key] = self.raw_expressions(df.schema)
        raw = df.select(self._raw[key]).to_numpy(order="fortran")  # nulls become NaN
        columns = self.schema.columns
        kinds = [{"categorical": CATEGORY, "boolean": AS_IS}.get(c.kind, NUMBER) for c in columns]
        widths = [len(c.vocabulary) + 1 if c.kind == "categorical" else 1 for c in columns]
        centre = [self.scaling[c.name][0] if c.kind == "numeric" else 0.0 for c in columns]
        scale = [self.scaling[c.name][1] if c.kind == "numeric" else 1.0 for c in columns]
        return scale_rows(
            raw.reshape(df.height, len(columns)),
            np.asarray(kinds),
            np.asarray(centre),
            np.asarray(scale),
            np.asarray(widths),
            clip=self.clip,
        )

    def matrix(
        self, df: pl.DataFrame | pl.LazyFrame, *, engine: object = "cpu", exprs: list[pl.Expr] | None = None
    ) -> np.ndarray:
        """The feature matrix (float32, rows × features, no missing values); ``exprs`` (:meth:`expressions`)
        asks for the Polars expressions on CPU too."""
        if exprs is None and engine == "cpu" and isinstance(df, pl.DataFrame):
            return self.fused_matrix(df)
        if exprs is None:
            exprs = self._cached_expressions(df.collect_schema() if isinstance(df, pl.LazyFrame) else df.schema)
        if engine == "cpu" and isinstance(df, pl.DataFrame):
            out = df.select(exprs)
        else:
            out = df.lazy().select(exprs).collect(engine=engine)  # type: ignore[call-overload]
        # Row-major straight from Polars: a quarter of the cost of converting a column-major copy.
        return np.ascontiguousarray(out.to_numpy(order="c"), dtype=np.float32)

    def _key(self, dtypes: Mapping[str, pl.DataType]) -> tuple[tuple[str, str], ...]:
        return tuple((c.name, str(dtypes.get(c.name))) for c in self.schema.columns)

    def _cached_expressions(self, dtypes: Mapping[str, pl.DataType]) -> list[pl.Expr]:
        """:meth:`expressions` for frames of one shape, built once (a scan's batches all share it)."""
        key = self._key(dtypes)
        if key not in self._exprs:
            self._exprs[key] = self.expressions(dtypes)
        return self._exprs[key]

    def to_json(self) -> str:
        return json.dumps({"scaling": {k: list(v) for k, v in self.scaling.items()}, "clip": self.clip}, indent=2)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_json(cls, schema: TableSchema, text: str) -> ThreatFeatures:
        raw = json.loads(text)
        return cls(schema, {k: (float(v[0]), float(v[1])) for k, v in raw["scaling"].items()}, float(raw["clip"]))

    @classmethod
    def load(cls, schema: TableSchema, path: Path) -> ThreatFeatures:
        return cls.from_json(schema, path.read_text(encoding="utf-8"))
