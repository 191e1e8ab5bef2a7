"""Reading and writing tables (CSV or Parquet) with errors a user can act on."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import DataFileError

__all__ = ["iter_batches", "read_table", "require_columns", "table_format", "write_table"]

_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def table_format(path: str | os.PathLike[str]) -> str:
    """``"csv"`` or ``"parquet"`` from the file name; anything else is a :class:`DataFileError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        msg = f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet"
        raise DataFileError(msg)
    return _FORMATS[suffix]


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        msg = f"{p}: no such file"
        raise DataFileError(msg)
    return p


def read_table(path: str | os.PathLike[str]) -> pl.DataFrame:
    """The whole table; CSV types are inferred from the whole file so late blanks do not break it."""
    p = _existing(path)
    fmt = table_format(p)
    try:
        if fmt == "csv":
            df = pl.read_csv(p, infer_schema_length=None, null_values=["", " "])
        else:
            df = pl.read_parquet(p)
    except Exception as exc:  # polars raises several types for a corrupt file
        msg = f"{p}: cannot be read as {fmt.upper()} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        raise DataFileError(msg) from exc
    if df.height == 0:
        msg = f"{p}: the table has no rows"
        raise DataFileError(msg)
    return df


def iter_batches(
    path: str | os.PathLike[str], *, batch_rows: int = 65_536, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a table as Arrow record batches, every column of a CSV read as text (parsed later, per row,
    so one bad value rejects one row, not the file)."""
    p = _existing(path)
    fmt = table_format(p)
    try:
        if fmt == "parquet":
            yield from pq.ParquetFile(p).iter_batches(batch_size=batch_rows, columns=columns)
            return
        header = _csv_header(p)
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            include_columns=columns,
            strings_can_be_null=False,
        )
        reader = pacsv.open_csv(p, read_options=pacsv.ReadOptions(block_size=1 << 22), convert_options=convert)
        yield from reader
    except (pa.ArrowInvalid, OSError) as exc:
        msg = f"{p}: cannot be read as {fmt.upper()} ({str(exc).splitlines()[0]})"
        raise DataFileError(msg) from exc


def _csv_header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        header = next(csv.reader(fh), [])
    if not header:
        msg = f"{path}: the CSV file has no header line"
        raise DataFileError(msg)
    return header


def require_columns(available: list[str], needed: list[str], *, source: str) -> None:
    """Raise one sentence naming the first missing column(s)."""
    missing = [c for c in needed if c not in set(available)]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5]) + (" …" if len(missing) > 5 else "")
        msg = f"{source}: missing column{'s' if len(missing) > 1 else ''} {shown} required by the model"
        raise DataFileError(msg)


def write_table(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write CSV or Parquet atomically (a temporary file renamed into place), so a rerun never
    leaves a half-written or duplicated output."""
    p = Path(path)
    fmt = table_format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.partial")
    if fmt == "csv":
        df.write_csv(tmp)
    else:
        df.write_parquet(tmp)
    tmp.replace(p)
    return p
