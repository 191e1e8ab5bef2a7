"""What a scan reads: the input files, cut into work units, each checked before any row is scored.

A unit is the smallest piece a worker takes: a group of Parquet row groups, a whole CSV file (CSV cannot be
entered in the middle), or a whole auth log (its windows need every line). Within a unit, rows are read in
batches of a fixed size, so the same inputs always give the same batches: that is what makes checkpoints
and Dask runs reproduce a single-process scan exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow.parquet as pq

from engine.errors import DataFileError
from engine.tables.io import csv_header, iter_batches, require_columns

__all__ = ["Unit", "Windows", "discover", "fingerprint", "plan_units", "unit_batches"]

Kind = Literal["parquet", "csv", "authlog"]
_KINDS: dict[str, Kind] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".log": "authlog"}


@dataclass(frozen=True)
class Windows:
    """How an auth log becomes rows: windows of ``every`` per ``by`` (``"source_ip"`` or ``"user"``)."""

    every: str = "10m"
    by: str = "source_ip"


@dataclass(frozen=True)
class Unit:
    index: int
    path: str
    kind: Kind
    row_groups: tuple[int, ...] = ()
    #: Row number (0-based, within the file) of the unit's first row.
    first_row: int = 0
    #: Rows in the unit when the file says so up front (Parquet), else None.
    rows: int | None = None


def _kind(path: Path) -> Kind | None:
    return _KINDS.get(path.suffix.lower())


def discover(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files to scan: files as given, folders searched recursively for .parquet/.pq/.csv/.log, in name
    order; each file once."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f) and not f.name.startswith("."))
            if not inside:
                msg = f"{p}: the folder holds no .parquet, .csv or .log file"
                raise DataFileError(msg)
            found.extend(inside)
        elif p.is_file():
            if _kind(p) is None:
                msg = f"{p}: unsupported file type {p.suffix or '(none)'!r}; use .parquet, .csv or .log (OpenSSH)"
                raise DataFileError(msg)
            found.append(p)
        else:
            msg = f"{p}: no such file or folder"
            raise DataFileError(msg)
    unique = list(dict.fromkeys(f.resolve() for f in found))
    if not unique:
        msg = "no input file to scan"
        raise DataFileError(msg)
    return unique


def fingerprint(files: Sequence[Path]) -> list[list[object]]:
    """What identifies the inputs of a checkpoint: path, size and modification time of each file."""
    out: list[list[object]] = []
    for f in files:
        st = f.stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def _columns_of(path: Path, kind: Kind) -> list[str] | None:
    if kind == "parquet":
        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            msg = f"{path}: cannot be read as PARQUET ({type(exc).__name__})"
            raise DataFileError(msg) from None
    if kind == "csv":
        return csv_header(path)
    return None  # auth logs: columns exist only after parsing


def plan_units(files: Sequence[Path], *, needed: Sequence[str], unit_rows: int) -> list[Unit]:
    """Cut ``files`` into units, checking up front that every table has the model's columns ``needed``."""
    units: list[Unit] = []
    for f in files:
        kind = _kind(f)
        assert kind is not None
        columns = _columns_of(f, kind)
        if columns is not None:
            require_columns(columns, list(needed), source=str(f))
        if kind != "parquet":
            units.append(Unit(len(units), str(f), kind))
            continue
        meta = pq.ParquetFile(f).metadata
        group: list[int] = []
        rows = first = 0
        for g in range(meta.num_row_groups):
            group.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= unit_rows:
                units.append(Unit(len(units), str(f), kind, tuple(group), first, rows))
                first += rows
                group, rows = [], 0
        if group or meta.num_row_groups == 0:
            units.append(Unit(len(units), str(f), kind, tuple(group), first, rows))
    return units


def unit_batches(
    unit: Unit,
    *,
    batch_rows: int,
    windows: Windows = Windows(),  # noqa: B008 - frozen, so one shared default is safe
    lines: dict[str, int] | None = None,
    columns: Sequence[str] | None = None,
    too_long: dict[int, str] | None = None,
) -> Iterator[tuple[int, pl.DataFrame]]:
    """``(first row within the file, frame)`` for each batch of the unit, always cut the same way.

    For an auth log the rows are its windows; ``lines`` (if given) receives its line counts. ``columns``
    limits a Parquet read to the columns of these names that the file has. A CSV row over the row limit
    (:func:`engine.tables.io.iter_batches`) keeps its place as a row of empty values, and ``too_long`` receives
    its row number and the reason (without ``too_long``, such a row is an error naming it).
    """
    if unit.kind == "authlog":
        from engine.families.threat.authlog import read_auth_log

        log = read_auth_log(unit.path, every=windows.every, by=windows.by)
        if lines is not None:
            lines.update(lines=log.lines, unparsed=log.unparsed)
        table = log.features
        for start in range(0, table.height, batch_rows):
            yield start, table.slice(start, batch_rows)
        return
    if unit.kind == "parquet":
        if not unit.row_groups:
            return
        # The unit's rows in one read, then zero-copy slices: Arrow's row groups rarely align with batches.
        lazy = pl.scan_parquet(unit.path)
        if columns is not None:
            present = set(lazy.collect_schema().names())
            lazy = lazy.select([c for c in dict.fromkeys(columns) if c in present])
        table = lazy.slice(unit.first_row, unit.rows).collect()
        for start in range(0, table.height, batch_rows):
            yield unit.first_row + start, table.slice(start, batch_rows)
        return
    found: list[tuple[int, str]] = []
    report = (lambda r, why: found.append((r, why))) if too_long is not None else None
    source = iter_batches(unit.path, batch_rows=batch_rows, on_reject=report)
    blank: pl.DataFrame | None = None  # a row of empty values, made from the header once a row needs it
    # Arrow's readers cut batches by bytes or row group; re-cut to exactly batch_rows rows.
    pending: list[pl.DataFrame] = []
    held = 0
    row = unit.first_row
    for rb in chain(source, [None]):
        # A row over the limit is reported as the reader passes it: before the batch that follows it.
        for r, why in found:
            assert too_long is not None
            if blank is None:
                blank = pl.DataFrame({name: [""] for name in csv_header(unit.path)})
            too_long[r] = why
            pending.append(blank)
            held += 1
        found.clear()
        if rb is not None:
            frame = pl.from_arrow(rb)
            assert isinstance(frame, pl.DataFrame)
            pending.append(frame)
            held += frame.height
        while held >= batch_rows:
            merged = pl.concat(pending, how="vertical")
            yield row, merged.slice(0, batch_rows)
            row += batch_rows
            rest = merged.slice(batch_rows)
            pending, held = [rest], rest.height
    if held:
        yield row, pl.concat(pending, how="vertical")
