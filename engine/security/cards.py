"""What a card number (PAN) looks like in text: the one rule that masking, the audit log, the output guard and
the tests' leak scan share.

A card number is 13 to 19 ASCII digits, either in one piece or in groups joined by single spaces or dashes,
that pass the Luhn check and

- start with 1 to 9 (ISO/IEC 7812's major industry identifier; 0 is no payment card). One that starts with 1
  must have 15 digits, the length of UATP's airline cards, the only payment cards that start with 1: the epoch
  times that logs are full of start with 1 too, and have 13 (ms), 16 (µs) or 19 (ns) digits;
- are not part of a longer word or number: a letter or digit right before or after the digits, as in a hex
  hash or an id, rules them out;
- are not the decimals of a number (``0.4111111111111111``, a score printed with 16 decimals).

A run of digit groups (``2024-01-15 4111 1111 1111 1111``) is searched for consecutive whole groups, longest
first, so the date in front of a card does not hide it.

A pass over a column's bytes looks first: :func:`candidates` marks the values that could hold a card number
(:data:`PREFILTER`, found by :func:`kernels.digitruns.digit_runs`, 5x Polars' regex engine on hex ids), and
only those reach :func:`find_cards`.

>>> find_cards("paid 4111 1111 1111 1111 on 2024-01-15")
[(5, 24)]
>>> has_card("uatp 135412345678911"), has_card("at 1700000000000000 us")
(True, False)
"""

from __future__ import annotations

import re

import polars as pl

from kernels.digitruns import PATTERN, digit_runs

__all__ = ["PREFILTER", "candidates", "card_rows", "count_cards", "find_cards", "first_card_cell", "first_card_row",
    "has_card", "luhn_valid"]  # fmt: skip

# [0-9], not \d: \d also matches other scripts' digits, which no card network issues.
_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")
#: Every card number holds 13 characters of digits, spaces and dashes in a row, starting and ending with a digit.
PREFILTER = PATTERN
_PREFILTER = re.compile(PREFILTER)
MIN_DIGITS, MAX_DIGITS, UATP_DIGITS = 13, 19, 15


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (ASCII digits only, no separators) pass the Luhn check.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    """The digits of one candidate (13-19 of them, no separators) against the first-digit and Luhn rules."""
    first = digits[0]
    if first == "0" or (first == "1" and len(digits) != UATP_DIGITS):
        return False
    return luhn_valid(digits)


def _glued_before(text: str, at: int) -> bool:
    """Whether the digits starting at ``at`` continue a word or number, or are a number's decimals."""
    if at == 0:
        return False
    before = text[at - 1]
    return before.isalnum() or (before == "." and at > 1 and text[at - 2].isdigit())


def find_cards(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the card numbers in ``text``, in order."""
    spans: list[tuple[int, int]] = []
    for run in _RUN.finditer(text):
        if run.end() - run.start() < MIN_DIGITS:
            continue
        base = run.start()
        groups = [(base + m.start(), base + m.end()) for m in _GROUP.finditer(run.group())]
        first = 1 if _glued_before(text, run.start()) else 0
        last = len(groups) - (1 if run.end() < len(text) and text[run.end()].isalnum() else 0)
        i = first
        while i < last:
            found = None
            ends, total = [], 0
            for j in range(i, last):
                total += groups[j][1] - groups[j][0]
                if total > MAX_DIGITS:
                    break
                if total >= MIN_DIGITS:
                    ends.append(j)
            for j in reversed(ends):
                start, end = groups[i][0], groups[j][1]
                if _is_card(re.sub(r"[ -]", "", text[start:end])):
                    found = j
                    spans.append((start, end))
                    break
            i = found + 1 if found is not None else i + 1
    return spans


def has_card(text: str) -> bool:
    """Whether ``text`` holds a card number (a quick pattern first, the whole rule only where it matches)."""
    return _PREFILTER.search(text) is not None and bool(find_cards(text))


def count_cards(text: str) -> int:
    """How many card numbers ``text`` holds."""
    return len(find_cards(text)) if _PREFILTER.search(text) else 0


def candidates(values: pl.Series) -> pl.Series:
    """Whether each value of a column could hold a card number: text matching :data:`PREFILTER`, or an integer of
    13 digits or more. Only these need :func:`find_cards`, so a column of short ids costs no Python call per value.
    Other types (floats, dates) hold none."""
    if values.dtype == pl.String:
        return pl.Series(values.name, digit_runs(values), dtype=pl.Boolean)
    if values.dtype.is_integer():
        found = values.cast(pl.Float64).abs() >= 1e12
    else:
        return pl.Series(values.name, [False] * len(values), dtype=pl.Boolean)
    return found.fill_null(False)


def card_rows(values: pl.Series) -> tuple[list[int], list[list[tuple[int, int]]]]:
    """The rows of a column that could hold a card number (:func:`candidates`), and :func:`find_cards` of each
    (as text: an integer column is read in its decimal digits)."""
    rows = candidates(values).arg_true().to_list()
    if not rows:
        return [], []
    return rows, [find_cards(v) for v in values.gather(rows).cast(pl.String).to_list()]


def first_card_row(values: pl.Series) -> int | None:
    """The first row of a column that holds a card number, or None."""
    at = candidates(values).arg_true()
    for row, value in zip(at.to_list(), values.gather(at).cast(pl.String).to_list(), strict=True):
        if has_card(value):
            return int(row)
    return None


def first_card_cell(frame: pl.DataFrame) -> tuple[str, int] | None:
    """The first (column, row) of a frame, column by column, that holds a card number, or None. One pass marks
    the columns with a candidate (:func:`candidates`); only those are read value by value."""
    marks = []
    for name in frame.columns:
        dtype, col = frame.schema[name], pl.col(name)
        if dtype.is_integer():
            marks.append((col.cast(pl.Float64).abs() >= 1e12).fill_null(False).any().alias(name))
    marked = frame.select(marks).row(0, named=True) if marks else {}
    texts = [name for name in frame.columns if frame.schema[name] == pl.String]
    marked.update({name: bool(digit_runs(frame.get_column(name)).any()) for name in texts})
    for name in frame.columns:
        if marked.get(name) and (row := first_card_row(frame.get_column(name))) is not None:
            return name, row
    return None
