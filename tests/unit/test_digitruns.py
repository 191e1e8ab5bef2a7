"""The byte-level prefilter of card numbers (kernels.digitruns) against Python's and Polars' regex engines."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.digitruns import PATTERN, digit_runs, digit_runs_ref

# Digits, the two separators, a letter and a non-ASCII digit (which is not a card digit): what moves a match.
TEXT = st.text(alphabet="0123456789 -a٣", max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=30))
def test_matches_python_regex(values: list[str | None]) -> None:
    series = pl.Series(values, dtype=pl.String)
    assert digit_runs(series).tolist() == digit_runs_ref(series).tolist()


def test_matches_polars_regex_on_slices_and_chunks() -> None:
    rng = np.random.default_rng(7)
    alphabet = np.array(list("0123456789 -x"))
    values = ["".join(rng.choice(alphabet, size=rng.integers(0, 30))) for _ in range(5000)]
    values[::17] = [None] * len(values[::17])
    series = pl.Series(values, dtype=pl.String)
    pieces = pl.concat([series.slice(3, 1000), series.slice(2000, 700)], rechunk=False)
    for s in (series, series.slice(11, 2500), pieces):
        found = digit_runs(s)
        assert found.tolist() == s.str.contains(PATTERN).fill_null(False).to_list()
        assert 0 < found.sum() < len(s)  # both outcomes occur, so the comparison says something


def test_exact_window() -> None:
    # 13 bytes from a digit to a digit is a match, 12 is not; a letter breaks the run; the ends must be digits.
    values = ["1234567890123", "123456789012", "12345a67890123", "- 123456789012 -", "1 2 3 4 5 6 7", "", None]
    assert digit_runs(pl.Series(values)).tolist() == [True, False, False, False, True, False, False]
