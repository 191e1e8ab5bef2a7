"""Reading and writing tables (CSV or Parquet) with errors a user can act on.

CSV is streamed through Arrow in blocks of 4 MB (or the row limit, if lower). Arrow's streaming reader fails
the whole file ("straddling object straddles two block boundaries") on a row that does not fit in its blocks,
and a block as large as the longest allowed row would cost that much memory on every file. So :class:`_Lines`
finds, two searches per block, the runs of lines no longer than a block, which Arrow reads as before; a longer
row is read on its own when it is within ``max_row_bytes`` (:mod:`engine.settings`) and rejected, by its row
number, when it is over: the rest of the file reads as if the row were not there, and memory stays at a few
blocks plus at most one row of the limit.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import DataFileError, UsageError
from engine.settings import env_name, resolve_settings

__all__ = [
    "RejectRow",
    "csv_header",
    "iter_batches",
    "read_table",
    "require_columns",
    "separator_of",
    "table_format",
    "write_table",
]

_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: Arrow's CSV block, unless the row limit is lower; a row longer than a block is read on its own.
_BLOCK = 1 << 22
#: Bytes of short lines Arrow reads in one go before looking ahead again.
_RUN = 1 << 26
#: The highest row limit: Arrow's block size is a 32-bit number, and a row is held whole to be read.
_MAX_ROW_LIMIT = 1 << 30
_MB = 1 << 20
#: ``(0-based data row, reason)`` of a row the reader leaves out.
RejectRow = Callable[[int, str], None]


def _gzipped(path: str | os.PathLike[str]) -> bool:
    """Whether the name is a gzip-compressed CSV's (``.csv.gz``)."""
    return [s.lower() for s in Path(path).suffixes[-2:]] == [".csv", ".gz"]


def table_format(path: str | os.PathLike[str]) -> str:
    """``"csv"`` (``.csv`` or ``.csv.gz``) or ``"parquet"`` from the file name; anything else is a
    :class:`DataFileError`."""
    suffix = ".csv" if _gzipped(path) else Path(path).suffix.lower()
    if suffix not in _FORMATS:
        msg = f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv, .csv.gz or .parquet"
        raise DataFileError(msg)
    return _FORMATS[suffix]


_SEPARATORS = ",;\t|"


def separator_of(header: bytes) -> str:
    """The separator of a CSV header line: whichever of ``,`` ``;`` tab ``|`` occurs most outside double quotes
    (``,`` when none does, a one-column file).

    >>> separator_of(b'age;"job, title";y'), separator_of(b"a,b"), separator_of(b"only")
    (';', ',', ',')
    """
    unquoted = re.sub(rb'"[^"]*"', b"", header)
    counts = [(unquoted.count(c.encode()), -i, c) for i, c in enumerate(_SEPARATORS)]
    best = max(counts)
    return best[2] if best[0] else ","


def _first_line(p: Path) -> bytes:
    """The file's first 64 KB up to the first line end (decompressed for ``.csv.gz``)."""
    opener = gzip.open if _gzipped(p) else open
    with opener(p, "rb") as fh:
        head = fh.read(1 << 16)
    return head.splitlines()[0] if head else b""


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
            sep = separator_of(_first_line(p))
            source: Path | bytes = gzip.decompress(p.read_bytes()) if _gzipped(p) else p
            df = pl.read_csv(source, separator=sep, infer_schema_length=None, null_values=["", " "])
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
    path: str | os.PathLike[str],
    *,
    batch_rows: int = 65_536,
    columns: list[str] | None = None,
    max_row_bytes: int | None = None,
    on_reject: RejectRow | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a table as Arrow record batches, every column of a CSV read as text (parsed later, per row,
    so one bad value rejects one row, not the file).

    A CSV row longer than ``max_row_bytes`` (default: the ``max_row_bytes`` setting) is left out of the
    batches and handed to ``on_reject`` with its 0-based data row number and a reason that gives its size,
    never its content; without ``on_reject`` it is a :class:`DataFileError` naming the row, since a caller that
    cannot report a row must not lose it silently.
    """
    p = _existing(path)
    fmt = table_format(p)
    try:
        if fmt == "parquet":
            yield from pq.ParquetFile(p).iter_batches(batch_size=batch_rows, columns=columns)
            return
        limit = _row_limit(max_row_bytes)
        if _gzipped(p):
            yield from _gzip_batches(p, columns=columns, block=min(_BLOCK, limit))
            return
        yield from _csv_batches(p, columns=columns, limit=limit, on_reject=on_reject)
    except (pa.ArrowInvalid, OSError, EOFError, gzip.BadGzipFile) as exc:
        msg = f"{p}: cannot be read as {fmt.upper()} ({_arrow_reason(exc)})"
        raise DataFileError(msg) from exc


def csv_header(path: str | os.PathLike[str], *, max_row_bytes: int | None = None) -> list[str]:
    """A CSV file's column names, read from its header line alone (a first data row over the limit, or a file of
    such rows, does not stop it)."""
    p = _existing(path)
    limit = _row_limit(max_row_bytes)
    try:
        if _gzipped(p):
            line = _first_line(p)
            return next(csv.reader([line.decode("utf-8", "replace")], delimiter=separator_of(line)), [])
        with p.open("rb", buffering=0) as fh, pa.OSFile(str(p)) as f:
            return _header(p, _Lines(fh, min(_BLOCK, limit)), f, limit)[0]
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        msg = f"{p}: cannot be read as CSV ({_arrow_reason(exc)})"
        raise DataFileError(msg) from exc


def _header(p: Path, lines: _Lines, f: pa.OSFile, limit: int) -> tuple[list[str], int, bool]:
    """The header's column names, the offset after it, and whether rows follow it."""
    size, at = lines.line(0)
    if size > limit:
        msg = f"{p}: the CSV header line is {_over(size, limit)} ({env_name('max_row_bytes')})"
        raise DataFileError(msg)
    if size == 0:
        msg = f"{p}: the CSV file has no header line"
        raise DataFileError(msg)
    parse = pacsv.ParseOptions(delimiter=separator_of(lines.head(size)))
    reader = pacsv.open_csv(f.get_stream(0, at), read_options=pacsv.ReadOptions(block_size=at + 1), parse_options=parse)
    return list(reader.schema.names), at, at > size  # a header without a line end: no rows


def _row_limit(given: int | None) -> int:
    limit = resolve_settings().max_row_bytes if given is None else given
    if not 1 <= limit <= _MAX_ROW_LIMIT:
        msg = (
            f"the CSV row limit ({env_name('max_row_bytes')}, --max-row-bytes) must be between 1 and "
            f"{_MAX_ROW_LIMIT:,} bytes, got {limit:,}"
        )
        raise UsageError(msg)
    return limit


def _arrow_reason(exc: BaseException) -> str:
    """Arrow's first line, without the row it quotes after "Expected N columns, got M": that is data."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    quoted = re.match(r".*?Expected \d+ columns, got \d+", first)
    return quoted.group(0) if quoted else first


def _csv_batches(
    p: Path, *, columns: list[str] | None, limit: int, on_reject: RejectRow | None
) -> Iterator[pa.RecordBatch]:
    # A block no longer than the limit: every row over it is then a row longer than a block, found unparsed.
    block = min(_BLOCK, limit)
    # Arrow reads the file itself (native streams of byte ranges): a Python file object or Python-owned bytes
    # handed to Arrow's threads can be released by one of them as the interpreter exits, which aborts it.
    with p.open("rb", buffering=0) as fh, pa.OSFile(str(p)) as f:
        lines = _Lines(fh, block)
        header, at, rows = _header(p, lines, f, limit)
        if not rows:
            return
        parse = pacsv.ParseOptions(delimiter=separator_of(lines.head(at)))
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            include_columns=columns,
            strings_can_be_null=False,
        )
        blocks = pacsv.ReadOptions(column_names=header, block_size=block)
        row = 0
        while True:
            end, ahead = lines.run(at)
            if end > at:
                stream = f.get_stream(at, end - at)
                for batch in pacsv.open_csv(stream, read_options=blocks, parse_options=parse, convert_options=convert):
                    row += batch.num_rows
                    yield batch
                at = end
            if ahead == "end":
                return
            if ahead == "more":
                continue
            size, after = lines.line(at)
            if size > limit:
                reason = f"the row is {_over(size, limit)} ({env_name('max_row_bytes')}, --max-row-bytes)"
                if on_reject is None:
                    msg = f"{p}: data row {row:,} (0-based): {reason}"
                    raise DataFileError(msg)
                on_reject(row, reason)
            else:
                alone = pacsv.ReadOptions(column_names=header, block_size=size + 1)
                yield from pacsv.read_csv(
                    f.get_stream(at, size), read_options=alone, parse_options=parse, convert_options=convert
                ).to_batches()
            row += 1
            at = after


def _gzip_batches(p: Path, *, columns: list[str] | None, block: int) -> Iterator[pa.RecordBatch]:
    """A ``.csv.gz`` streamed by Arrow through gzip, every column as text (see the module's note on long rows)."""
    line = _first_line(p)
    header = next(csv.reader([line.decode("utf-8", "replace")], delimiter=separator_of(line)), [])
    if not header:
        msg = f"{p}: the CSV file has no header line"
        raise DataFileError(msg)
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header}, include_columns=columns, strings_can_be_null=False
    )
    parse = pacsv.ParseOptions(delimiter=separator_of(line))
    with pa.input_stream(str(p), compression="gzip") as stream:
        reader = pacsv.open_csv(
            stream, read_options=pacsv.ReadOptions(block_size=block), parse_options=parse, convert_options=convert
        )
        yield from reader


def _over(size: int, limit: int) -> str:
    """``"10.0 MB, over the limit of 8.0 MB"``; in bytes when the two would read the same."""
    row, cap = _size(size), _size(limit)
    if row == cap:
        row, cap = f"{size:,} bytes", f"{limit:,} bytes"
    return f"{row}, over the limit of {cap}"


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < _MB else f"{n / _MB:.1f} MB"


def _first_end(chunk: bytes) -> int:
    lf = chunk.find(b"\n")
    cr = chunk.find(b"\r", 0, lf if lf >= 0 else len(chunk))
    return cr if cr >= 0 else lf


def _last_end(chunk: bytes) -> int:
    lf = chunk.rfind(b"\n")
    return max(lf, chunk.rfind(b"\r", lf + 1))


class _Lines:
    """Where a CSV file's lines end, found with reads of its own a block at a time (two searches per block).

    A line ends at LF or CR, as Arrow's own chunker cuts a CSV whose values hold no line breaks (its default),
    so the rows are the ones Arrow reads from the whole file. Arrow reads a run of lines of at most a block each
    (line end included) in blocks without fail: the rest of a line cut by one block ends in the next.
    """

    def __init__(self, fh: io.RawIOBase, block: int) -> None:
        self._fh = fh
        self._block = block

    def _read(self, at: int, n: int) -> bytes:
        self._fh.seek(at)
        return self._fh.read(n) or b""

    def run(self, at: int) -> tuple[int, str]:
        """Where the run of lines of at most a block from offset ``at`` ends (at a line start, after about
        ``_RUN`` bytes at most), and what comes there: ``"more"`` lines, a ``"long"`` one, or the ``"end"``."""
        start = pos = at
        while True:
            chunk = self._read(pos, self._block)
            if not chunk:  # the end (a last line without a line end is shorter than a block: see below)
                return pos, "end"
            first = _first_end(chunk)
            if first < 0 or pos + first - start + 1 > self._block:
                if first < 0 and pos + len(chunk) - start < self._block:
                    pos += len(chunk)
                    continue
                return start, "long"
            start = pos + _last_end(chunk) + 1
            pos += len(chunk)
            if start - at >= _RUN:
                return start, "more"

    def head(self, size: int) -> bytes:
        """The file's first ``size`` bytes (at most a block: the header line, to find its separator)."""
        return self._read(0, min(size, _BLOCK))

    def line(self, at: int) -> tuple[int, int]:
        """The size of the line at offset ``at`` without its line end, and the offset after it; read a block at a
        time, never held. (The LF of a CR LF is then an empty line, which Arrow skips.)"""
        size = 0
        while True:
            chunk = self._read(at + size, _BLOCK)
            end = _first_end(chunk)
            if end < 0:
                if not chunk:
                    return size, at + size
                size += len(chunk)
                continue
            size += end
            return size, at + size + 1


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
        df.write_csv(tmp, compression="gzip" if _gzipped(p) else "uncompressed", check_extension=False)
    else:
        df.write_parquet(tmp)
    tmp.replace(p)
    return p
