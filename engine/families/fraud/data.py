"""A user's transaction table → the canonical columns the transaction kernels read.

The user names the columns (``--card``, ``--time``, ...); everything downstream sees ``card``,
``terminal``, ``amount``, ``time`` (Int64 µs since the Unix epoch, UTC), ``label`` and ``transaction_id``.
Ids become text, as they arrive over gRPC, so the batch kernels and the server group the same keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from engine.errors import SchemaError

__all__ = ["FraudColumns", "canonical", "parse_duration_us"]

_UNITS = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}


def parse_duration_us(text: str) -> int:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"`` → microseconds.

    >>> parse_duration_us("1d")
    86400000000
    """
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        amount = float(value)
    except ValueError:
        amount = -1.0
    if unit not in _UNITS or amount <= 0:
        msg = f"a duration must be a positive number followed by s, m, h or d (e.g. 7d), got {text!r}"
        raise SchemaError(msg)
    return int(amount * _UNITS[unit])


@dataclass(frozen=True)
class FraudColumns:
    """Which of the user's columns hold what (``terminal`` and ``id`` are optional)."""

    card: str
    time: str
    amount: str
    label: str | None = None
    terminal: str | None = None
    id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


# ISO 8601 as exports write it, with an offset (read as such) or without (read as UTC).
_ZONED = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z")
_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


def _time_us(df: pl.DataFrame, name: str) -> pl.Expr:
    dtype = df.schema[name]
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        expr = col.dt.replace_time_zone(None) if dtype.time_zone else col
        return expr.dt.cast_time_unit("us").cast(pl.Int64)
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).cast(pl.Int64)
    if dtype.is_numeric():  # epoch seconds, as most exports write them
        return (col.cast(pl.Float64) * 1_000_000).round().cast(pl.Int64)
    if dtype == pl.String:
        text = col.str.strip_chars()
        aware = [text.str.to_datetime(f, time_unit="us", strict=False).dt.convert_time_zone("UTC") for f in _ZONED]
        naive = [text.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone("UTC") for f in _NAIVE]
        return pl.coalesce(*aware, *naive).dt.replace_time_zone(None).cast(pl.Int64)
    msg = f"column {name!r} must hold times (datetime, date, ISO text or epoch seconds), found {dtype}"
    raise SchemaError(msg)


def canonical(df: pl.DataFrame, columns: FraudColumns, *, source: str = "the table") -> pl.DataFrame:
    """The canonical frame of ``df``, in its row order; missing columns and unreadable values are errors."""
    wanted = [c for c in (columns.card, columns.time, columns.amount, columns.label, columns.terminal, columns.id) if c]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        msg = f"{source} has no column {missing[0]!r} (columns: {', '.join(df.columns[:12])})"
        raise SchemaError(msg)
    if not df.schema[columns.amount].is_numeric():
        msg = f"column {columns.amount!r} (the amount) must be numeric, found {df.schema[columns.amount]}"
        raise SchemaError(msg)
    exprs = [
        pl.col(columns.card).cast(pl.String).alias("card"),
        (pl.col(columns.terminal).cast(pl.String) if columns.terminal else pl.lit("")).alias("terminal"),
        pl.col(columns.amount).cast(pl.Float64).alias("amount"),
        _time_us(df, columns.time).alias("time"),
        (pl.col(columns.id).cast(pl.String) if columns.id else pl.int_range(pl.len()).cast(pl.String)).alias(
            "transaction_id"
        ),
    ]
    if columns.label:
        exprs.append(_label(df, columns.label).alias("label"))
    out = df.select(exprs)
    for name, what in (("card", "card id"), ("time", "readable time"), ("amount", "amount")):
        bad = out[name].null_count() + (out[name].is_nan().sum() if name == "amount" else 0)
        if bad:
            msg = f"{source}: {bad} of {out.height} rows have no {what} (column {getattr(columns, name)!r})"
            raise SchemaError(msg)
    return out


def _label(df: pl.DataFrame, name: str) -> pl.Expr:
    values = set(df[name].drop_nulls().cast(pl.String).str.to_lowercase().unique().to_list())
    if not values <= {"0", "1", "true", "false", "yes", "no"}:
        shown = ", ".join(sorted(values)[:5])
        msg = f"column {name!r} (the label) must hold 0/1, true/false or yes/no, found {shown}"
        raise SchemaError(msg)
    return pl.col(name).cast(pl.String).str.to_lowercase().is_in(["1", "true", "yes"]).cast(pl.Int8)
