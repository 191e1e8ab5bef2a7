"""What a customer table holds, learned from the data: the schema every model, config and client follows.

:func:`infer_schema` reads a table once and decides, per column, whether it is a feature (numeric,
boolean or categorical, with its vocabulary), the label, the id, or excluded (and why). The schema is
saved beside each model version; the served model's inputs, the bulk scorer and the clients all follow it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from engine.errors import DataFileError, SchemaError
from kernels import BOOLEAN_SPELLINGS, FALSE_WORDS, TRUE_WORDS, boolean, category_code, numeric, parse_number

__all__ = ["Column", "TableSchema", "infer_schema"]

Kind = Literal["numeric", "boolean", "categorical"]
Wire = Literal["FP32", "BYTES"]

#: A text column with more distinct values than this is free text or an identifier, not a category.
MAX_CATEGORIES = 1000
#: Share of parseable values above which a text column is read as numbers.
NUMERIC_SHARE = 0.95


@dataclass(frozen=True)
class Column:
    """One model input: the raw column's name, how it becomes a feature, and its wire type."""

    name: str
    kind: Kind
    wire: Wire
    vocabulary: tuple[str, ...] = ()

    @property
    def xgb_type(self) -> str:
        return "c" if self.kind == "categorical" else "q"

    def expr(self, source_dtype: pl.DataType | None = None) -> pl.Expr:
        """The kernel that turns the raw column into this feature."""
        if self.kind == "categorical":
            return category_code(self.name, self.vocabulary)
        if self.kind == "boolean" and (self.wire == "BYTES" or source_dtype == pl.Boolean):
            return boolean(self.name)
        # A Boolean column of the training table is served as FP32 1/0: the number kernel reads it.
        if source_dtype is not None and source_dtype == pl.String:
            return parse_number(self.name).cast(pl.Float32).fill_nan(None).alias(self.name)
        return numeric(self.name)


@dataclass(frozen=True)
class TableSchema:
    """Features, label and id of a table, with the reason each other column was left out."""

    columns: tuple[Column, ...]
    label: str | None = None
    positive: str | None = None
    id_column: str | None = None
    excluded: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        msg = f"no column {name!r} in the schema"
        raise KeyError(msg)

    def expressions(self, dtypes: Mapping[str, pl.DataType]) -> list[pl.Expr]:
        """The feature kernels for a frame whose columns have ``dtypes`` (build once, reuse per batch)."""
        return [c.expr(dtypes.get(c.name)) for c in self.columns]

    def wire_dtypes(self) -> dict[str, pl.DataType]:
        """The column dtypes of a request as served: Float32 numbers, String text."""
        return {c.name: pl.Float32() if c.wire == "FP32" else pl.String() for c in self.columns}

    def feature_frame(
        self, df: pl.DataFrame | pl.LazyFrame, *, engine: object = "cpu", exprs: list[pl.Expr] | None = None
    ) -> pl.DataFrame:
        """The features as a frame, one Float32 column per schema column, in schema order.

        On the CPU an eager frame is selected directly: for the small batches of online scoring the
        lazy planner costs more than the work. The GPU always goes through ``collect(engine=...)``.
        """
        if exprs is None:
            exprs = self.expressions(df.collect_schema() if isinstance(df, pl.LazyFrame) else df.schema)
        if engine == "cpu" and isinstance(df, pl.DataFrame):
            return df.select(exprs)
        return df.lazy().select(exprs).collect(engine=engine)  # type: ignore[call-overload]

    def features(
        self, df: pl.DataFrame | pl.LazyFrame, *, engine: object = "cpu", exprs: list[pl.Expr] | None = None
    ) -> np.ndarray:
        """The feature matrix (float32, rows × columns, NaN for missing) XGBoost reads."""
        out = self.feature_frame(df, engine=engine, exprs=exprs).to_numpy()
        return np.ascontiguousarray(out, dtype=np.float32)

    def labels(self, df: pl.DataFrame) -> np.ndarray:
        """1 for the positive label value, 0 for the other, -1 where the label is missing."""
        if self.label is None or self.positive is None:
            msg = "the schema has no label"
            raise SchemaError(msg)
        raw = df.get_column(self.label).cast(pl.String).str.strip_chars()
        positive = raw.str.to_lowercase() == self.positive.lower()
        return np.where(raw.is_null().to_numpy(), -1, positive.fill_null(False).to_numpy().astype(np.int8))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> TableSchema:
        raw = json.loads(text)
        cols = tuple(
            Column(name=c["name"], kind=c["kind"], wire=c["wire"], vocabulary=tuple(c["vocabulary"]))
            for c in raw["columns"]
        )
        return cls(
            columns=cols,
            label=raw.get("label"),
            positive=raw.get("positive"),
            id_column=raw.get("id_column"),
            excluded=dict(raw.get("excluded", {})),
        )

    def save(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> TableSchema:
        return cls.from_json(path.read_text(encoding="utf-8"))


def _positive_value(values: list[str], label: str, positive: str | None) -> str:
    if len(values) != 2:
        shown = ", ".join(repr(v) for v in values[:5])
        msg = f"label column {label!r} must have exactly two values, found {len(values)} ({shown})"
        raise SchemaError(msg)
    if positive is not None:
        for v in values:
            if v.lower() == str(positive).strip().lower():
                return v
        msg = f"--positive {positive!r} is not a value of label column {label!r} (values: {values[0]!r}, {values[1]!r})"
        raise SchemaError(msg)
    lowered = {v.lower(): v for v in values}
    trues = [lowered[w] for w in TRUE_WORDS if w in lowered]
    falses = [w for w in FALSE_WORDS if w in lowered]
    if len(trues) == 1 and len(falses) == 1:
        return trues[0]
    msg = (
        f"cannot tell which value of label column {label!r} means churn "
        f"({values[0]!r} or {values[1]!r}); pass --positive VALUE"
    )
    raise SchemaError(msg)


def _is_yes_no(values: list[str]) -> bool:
    """Two values, one yes-word and one no-word, spelt exactly as the boolean kernel reads them."""
    if len(values) != 2 or not set(values) <= set(BOOLEAN_SPELLINGS):
        return False
    return {v.lower() in TRUE_WORDS for v in values} == {True, False}


def _classify(series: pl.Series, height: int) -> Column | str:
    """A :class:`Column`, or the reason the series is not a feature."""
    name = series.name
    dtype = series.dtype
    non_null = series.drop_nulls()
    distinct = non_null.n_unique()
    if distinct <= 1:
        return "constant or empty"
    if dtype == pl.Boolean:
        return Column(name, "boolean", "FP32")
    if dtype.is_numeric():
        if dtype.is_integer() and distinct == height and height >= 20:
            return "id-like (a different integer on every row)"
        return Column(name, "numeric", "FP32")
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        text = non_null.cast(pl.String).str.strip_chars()
        text = text.filter(text != "")
        parsed = text.cast(pl.Float64, strict=False)
        if len(text) and parsed.is_not_null().sum() >= NUMERIC_SHARE * len(text):
            return Column(name, "numeric", "FP32")
        if _is_yes_no(non_null.cast(pl.String).unique().sort().to_list()):
            return Column(name, "boolean", "BYTES")
        if distinct == height and height >= 20:
            return "id-like (a different value on every row)"
        if distinct > MAX_CATEGORIES or (distinct > 50 and distinct > 0.2 * height):
            return f"free text or identifier ({distinct} distinct values)"
        counts = text.value_counts(sort=True)
        ordered = counts.sort(["count", text.name], descending=[True, False]).get_column(text.name).to_list()
        return Column(name, "categorical", "BYTES", tuple(ordered))
    return f"unsupported type {dtype}"


def _guess_id(candidates: list[str]) -> str | None:
    """Among id-like columns, prefer one named like an id (CustomerId over RowNumber)."""
    named = [c for c in candidates if "id" in c.lower()]
    pool = named or candidates
    return pool[0] if pool else None


def infer_schema(
    df: pl.DataFrame,
    *,
    label: str | None = None,
    id_column: str | None = None,
    positive: str | None = None,
) -> TableSchema:
    """Learn a :class:`TableSchema` from a table.

    Parameters
    ----------
    df
        The table (as read by :func:`engine.tables.io.read_table`).
    label
        The target column; its two values are mapped to 1/0 (``positive`` names the 1, else yes/true/1).
    id_column
        A column to carry through to outputs and never use as a feature; guessed if not given.
    positive
        The label value meaning "churned".
    """
    present = set(df.columns)
    for role, name in (("label", label), ("id", id_column)):
        if name is not None and name not in present:
            msg = f"{role} column {name!r} is not in the table (columns: {', '.join(df.columns[:12])})"
            raise DataFileError(msg)
    positive_value = None
    if label is not None:
        values = df.get_column(label).drop_nulls().cast(pl.String).str.strip_chars().unique().sort().to_list()
        positive_value = _positive_value(values, label, positive)

    columns: list[Column] = []
    excluded: dict[str, str] = {}
    for name in df.columns:
        if name == label:
            continue
        if name == id_column:
            excluded[name] = "id column"
            continue
        verdict = _classify(df.get_column(name), df.height)
        if isinstance(verdict, Column):
            columns.append(verdict)
        else:
            excluded[name] = verdict
    if id_column is None:
        id_column = _guess_id([n for n, why in excluded.items() if why.startswith("id-like")])
    if not columns:
        msg = "no usable feature column: every column is the label, an id, constant or free text"
        raise SchemaError(msg)
    return TableSchema(
        columns=tuple(columns), label=label, positive=positive_value, id_column=id_column, excluded=excluded
    )
