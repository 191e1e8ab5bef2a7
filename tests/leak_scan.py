"""The log scan run after the suites: no card number and no raw customer id in what finscore writes about itself.

Scanned under the session's temporary folder: server logs (``*.log``), alert files (``*.jsonl``/``*.ndjson``
and Parquet files with an ``anomaly_score`` column) and audit logs (``*.jsonl``, FINSCORE_HOME's
``audit.jsonl`` among them). Data files the tests feed in are CSV/Parquet without that column, so they are
not scanned: they hold card numbers and customer ids on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from engine.security.cards import count_cards

__all__ = ["CUSTOMER_ID", "find_leaks", "is_scanned", "scanned_files"]

#: What :func:`engine.demo.tables.churn_customers` names its customers: C + ten digits.
CUSTOMER_ID = re.compile(r"(?<![0-9A-Za-z])C[0-9]{10}(?![0-9A-Za-z])")
_TEXT = (".log", ".jsonl", ".ndjson")
#: Folders of tests that plant leaks on purpose, to show the scan finds them.
SELF_TEST = "leak-scan-selftest"


def is_scanned(p: Path) -> bool:
    """Whether ``p`` is a server log, alert file or audit log."""
    if p.suffix in _TEXT:
        return p.is_file()
    if p.suffix == ".parquet":
        try:
            return "anomaly_score" in pl.read_parquet_schema(p)
        except Exception:  # a half-written or foreign file is not an alert file
            return False
    return False


def scanned_files(root: Path) -> list[Path]:
    """The files under ``root`` the scan reads, but for those under a :data:`SELF_TEST` folder."""
    return [p for p in sorted(root.rglob("*")) if not any(SELF_TEST in x for x in p.parts) and is_scanned(p)]


def _text(path: Path) -> str:
    if path.suffix == ".parquet":
        return "\n".join(map(str, pl.read_parquet(path).iter_rows()))
    return path.read_text(encoding="utf-8", errors="replace")


def find_leaks(paths: Iterable[Path]) -> list[str]:
    """One line per file that holds a Luhn-valid card number or a raw customer id: the file and what kind."""
    found = []
    for path in paths:
        text = _text(path)
        pans = count_cards(text)
        ids = len(CUSTOMER_ID.findall(text))
        if pans or ids:
            found.append(f"{path}: {pans} card numbers, {ids} customer ids")
    return found
