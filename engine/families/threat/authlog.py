"""Reading raw OpenSSH auth logs (``/var/log/auth.log``, ``/var/log/secure``) into window features.

The parsing and the features are :mod:`kernels.sshlog`; this module finds and reads the file, counts what
did and did not parse, and turns every failure into one :class:`DataFileError` sentence that never quotes
the log (it holds user names and addresses).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from engine.device import polars_engine, resolve_device
from engine.errors import DataFileError, InvalidInputError
from kernels.sshlog import ENTITIES, SSHD_LINE, parse_auth_lines, window_features

__all__ = ["AuthLogTable", "is_auth_log", "read_auth_log"]

_TABLE_SUFFIXES = {".csv", ".parquet", ".pq", ".json", ".ndjson", ".arrow", ".ipc", ".feather", ".xlsx"}
_SNIFF_BYTES = 16_384
_SNIFF_LINES = 20
# Fixed-length durations only: a calendar month or year has no fixed number of seconds.
_DURATION = re.compile(r"(?:\d+(?:ns|us|ms|s|m|h|d|w))+")


@dataclass(frozen=True)
class AuthLogTable:
    """Window features of one auth log, with the line counts that say how much of it they cover.

    Attributes
    ----------
    features : pl.DataFrame
        One row per source IP (or user, ``by="user"``) and window, as :func:`kernels.sshlog.window_features`
        writes it.
    lines : int
        Non-blank lines in the file.
    parsed : int
        Lines that are sshd syslog lines.
    unparsed : int
        The other non-blank lines (``lines - parsed``).
    events : int
        Parsed lines that carry a source IP: the events the features summarise.
    """

    features: pl.DataFrame
    lines: int
    parsed: int
    unparsed: int
    events: int


def is_auth_log(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like an sshd auth log rather than a table.

    A ``.log`` name is enough; a table suffix (``.csv``, ``.parquet``, ...) rules it out; any other name
    (``secure``, ``auth.log.1``) is decided by whether one of its first lines is an sshd syslog line.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".log":
        return True
    if suffix in _TABLE_SUFFIXES or not p.is_file():
        return False
    try:
        with p.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError:
        return False
    text = head.decode("utf-8", errors="replace").replace("\x00", "")
    pattern = re.compile(SSHD_LINE)
    return any(pattern.match(line.rstrip("\r")) for line in text.split("\n")[:_SNIFF_LINES])


def _unreadable(path: Path, exc: OSError) -> DataFileError:
    msg = f"{path}: cannot be read ({exc.strerror or type(exc).__name__})"
    return DataFileError(msg)


def _scan_lines(path: Path) -> pl.LazyFrame:
    """The file's lines as a ``line`` column; empty lines are null."""
    # Polars' CSV reader with a separator that logs do not use reads any text fast, invalid UTF-8 included; a
    # later line cut at a unit separator (0x1f) still counts. One in the first line would set the column
    # count, so such a file is split here instead.
    try:
        return pl.read_csv(
            path,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            schema={"line": pl.String},
            encoding="utf8-lossy",
            truncate_ragged_lines=True,
            raise_if_empty=False,
        ).lazy()
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, pl.exceptions.ShapeError):
        pass
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return pl.LazyFrame({"line": [line or None for line in lines]}, schema={"line": pl.String})


def read_auth_log(
    path: str | os.PathLike[str],
    *,
    year: int | None = None,
    every: str = "10m",
    by: str = "source_ip",
    device: str = "cpu",
) -> AuthLogTable:
    """Parse an OpenSSH auth log and summarise each source IP per window of ``every``.

    Parameters
    ----------
    path : str or os.PathLike
        A syslog file of sshd (any encoding; invalid UTF-8 is replaced, blank lines are skipped).
    year : int, optional
        The year of the classic ``Mon DD HH:MM:SS`` timestamps. By default the year the file was last
        written, and the year before for dates that would fall after that write (so a log that crosses
        New Year is dated right); a copied file has a new modification time, so pass ``year`` for it.
    every : str
        The window length: a fixed duration such as ``"10m"``, ``"1h"`` or ``"1h30m"``.
    by : str
        What a window is about: ``"source_ip"`` (default) or ``"user"``.
    device : str
        ``"cpu"``, ``"gpu"`` or ``"auto"``: where Polars runs the parsing and the features.

    Returns
    -------
    AuthLogTable
        The features and the line counts.

    Raises
    ------
    DataFileError
        The file is missing, unreadable, empty, or has no sshd syslog line.
    InvalidInputError
        ``every`` is not a fixed positive duration, or ``year`` is outside 1..9999.
    """
    if by not in ENTITIES:
        msg = f"windows are per source IP or per user ('source_ip' or 'user'), not {by!r}"
        raise InvalidInputError(msg)
    if not _DURATION.fullmatch(every) or not re.search(r"[1-9]", every):
        msg = f"every: expected a positive duration such as '10m' or '1h', got {every!r}"
        raise InvalidInputError(msg)
    if year is not None and not 1 <= year <= 9999:
        msg = f"year: expected a year between 1 and 9999, got {year}"
        raise InvalidInputError(msg)
    p = Path(path)
    if not p.is_file():
        msg = f"{p}: no such file"
        raise DataFileError(msg)
    try:
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise _unreadable(p, exc) from exc
    engine = polars_engine(resolve_device(device))
    lines = _scan_lines(p).filter(pl.col("line").str.strip_chars().str.len_bytes() > 0)
    not_after = None
    if year is None:
        # Dated by the last write, with a day's grace for clocks: later dates are from the year before.
        written = datetime.fromtimestamp(mtime)
        year, not_after = written.year, written + timedelta(days=1)
    try:
        events = parse_auth_lines(lines, year=year, not_after=not_after).collect(engine=engine)
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"{p}: cannot be read as a text log ({type(exc).__name__})"
        raise DataFileError(msg) from exc
    if events.height == 0:
        msg = f"{p}: the file is empty (no line with text)"
        raise DataFileError(msg)
    parsed = int(events.get_column("parsed").sum())
    if parsed == 0:
        msg = f"{p}: none of its {events.height} lines is an OpenSSH (sshd) syslog line"
        raise DataFileError(msg)
    features = window_features(events.lazy(), every=every, by=by).collect(engine=engine)
    return AuthLogTable(
        features=features,
        lines=events.height,
        parsed=parsed,
        unparsed=events.height - parsed,
        events=int(features.get_column("events").sum()),
    )
