"""Segments in plain words: each segment named by the traits that set it apart from the whole table.

A trait is one dimension of the :class:`engine.families.segments.space.SegmentSpace` where the segment stands
at least :data:`STRONG` standard deviations from the table:

- a number column whose segment mean has a z-score of +0.5 or more is "high <column words>", of -0.5 or less
  "low <column words>" (a few columns have words of their own: age gives "young" / "older");
- a yes/no column whose share of yes stands 0.5 standard deviations from the table's, to the side of the
  segment's majority, reads as the column's words, or "no ..." (``has_loan`` → "loan" / "no loan");
- a category value whose share in the segment is a majority and 0.5 indicator standard deviations above its
  share in the table reads "<column words> <value>" (``channel`` = ``app`` → "channel app").

A segment's name is its :data:`NAME_TRAITS` strongest traits joined with commas; names are made unique within a
version by adding the next traits, and the segment's id as a last resort.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from engine.families.segments.space import SegmentSpace

__all__ = ["NAME_TRAITS", "STRONG", "TYPICAL", "column_words", "segment_names", "trait_phrases", "traits"]

#: The distance from the table, in standard deviations, from which a dimension is a trait.
STRONG = 0.5
NAME_TRAITS = 3
#: The name of a segment with no trait.
TYPICAL = "typical customers"

_UNITS = {"month", "months", "monthly", "year", "years", "yrs", "day", "days", "per", "count", "cnt", "num"}
#: Columns with words of their own: (low, high).
_OWN_WORDS = {
    "age": ("young", "older"),
    "tenure": ("new customers", "long-standing"),
}
_YES = {"yes", "true", "y", "1"}
_NO = {"no", "false", "n", "0"}


def column_words(name: str) -> str:
    """A column name in words: snake_case, camelCase and dots become spaces, a trailing unit goes.

    >>> column_words("digital_logins_month"), column_words("tenureYears"), column_words("emp.var.rate")
    ('digital logins', 'tenure', 'emp var rate')
    """
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    words = [w.lower() for w in re.split(r"[\s_.\-/]+", spaced) if w]
    while len(words) > 1 and words[-1] in _UNITS:
        words.pop()
    return " ".join(words) or name


def _yes_no_words(words: str) -> tuple[str, str]:
    """(no, yes) phrases of a yes/no column: ``has loan`` → ("no loan", "loan")."""
    bare = re.sub(r"^(has|have|is|are|with)\s+", "", words)
    return f"no {bare}", bare


def trait_phrases(space: SegmentSpace) -> list[tuple[str, str]]:
    """(low, high) phrases of each dimension of ``space``; a category value's "low" phrase is empty (only a
    majority value is a trait)."""
    kinds = {c.name: c.kind for c in space.schema.columns}
    out = []
    for name, value in space.dimensions:
        words = column_words(name)
        if value is not None:
            low = value.strip().lower()
            if low in _YES:
                out.append(("", words))
            elif low in _NO:
                out.append(("", _yes_no_words(words)[0]))
            else:
                out.append(("", f"{words} {column_words(value)}"))
        elif kinds[name] == "boolean":
            out.append(_yes_no_words(words))
        elif words in _OWN_WORDS:
            out.append(_OWN_WORDS[words])
        else:
            out.append((f"low {words}", f"high {words}"))
    return out


def traits(space: SegmentSpace, z: np.ndarray, shares: np.ndarray) -> list[tuple[float, str]]:
    """A segment's traits, strongest first: ``(strength, phrase)``. ``z`` is the segment's
    :meth:`SegmentSpace.z_scores`, ``shares`` its point of the space (:meth:`SegmentSpace.vector`)."""
    yes_no = {c.name for c in space.schema.columns if c.kind == "boolean"}
    found = []
    for i, ((name, value), (low, high)) in enumerate(zip(space.dimensions, trait_phrases(space), strict=True)):
        if not np.isfinite(z[i]) or abs(z[i]) < STRONG:
            continue
        if name in yes_no:  # a yes/no trait is what most of the segment answer
            if (z[i] > 0) == (shares[i] > 0.5):
                found.append((abs(float(z[i])), high if z[i] > 0 else low))
        elif value is None:
            found.append((abs(float(z[i])), high if z[i] > 0 else low))
        elif z[i] > 0 and shares[i] > 0.5:
            found.append((float(z[i]), high))
    return sorted(found, key=lambda t: -t[0])


def segment_names(found: Sequence[Sequence[tuple[float, str]]], ids: Sequence[int]) -> list[str]:
    """Unique names of segments with traits ``found`` (each strongest first) and ids ``ids``."""
    taken = [min(NAME_TRAITS, len(t)) for t in found]

    def name(i: int) -> str:
        return ", ".join(p for _, p in found[i][: taken[i]]) or TYPICAL

    names = [name(i) for i in range(len(found))]
    while True:
        clashes = [i for i, n in enumerate(names) if names.count(n) > 1 and taken[i] < len(found[i])]
        if not clashes:
            break
        for i in clashes:
            taken[i] += 1
        names = [name(i) for i in range(len(found))]
    return [f"{n} (segment {ids[i]})" if names.count(n) > 1 else n for i, n in enumerate(names)]
