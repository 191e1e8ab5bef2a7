from __future__ import annotations

import math

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import BOOLEAN_SPELLINGS, TRUE_WORDS, boolean, category_code, numeric, parse_number

WORDS = st.sampled_from(["Yes", "no", " TRUE ", "TRUE", "f", "maybe", "", "1", "0", "Y", "x", "yEs"])


def boolean_ref(v: str | None) -> float | None:
    if v is None:
        return None
    if v not in BOOLEAN_SPELLINGS:
        return None
    return 1.0 if v.lower() in TRUE_WORDS else 0.0


def category_ref(v: str | None, vocab: list[str]) -> float | None:
    return float(vocab.index(v)) if v in vocab else None


def number_ref(v: str | None) -> float | None:
    if v is None:
        return None
    try:
        x = float(v.strip())
    except ValueError:
        return None
    return x


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), WORDS), min_size=1, max_size=40))
def test_boolean_matches_reference(values: list[str | None]) -> None:
    got = pl.DataFrame({"x": values}, schema={"x": pl.String}).select(boolean("x")).to_series().to_list()
    assert got == [boolean_ref(v) for v in values]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.sampled_from(list("abcdefg"))), min_size=1, max_size=40),
    st.lists(st.sampled_from(list("abcde")), min_size=1, max_size=5, unique=True),
)
def test_category_code_matches_reference(values: list[str | None], vocab: list[str]) -> None:
    got = pl.DataFrame({"x": values}, schema={"x": pl.String}).select(category_code("x", vocab)).to_series()
    assert got.dtype == pl.Float32
    assert got.to_list() == [category_ref(v, vocab) for v in values]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(allow_infinity=False, width=32)), min_size=1, max_size=40))
def test_numeric_reads_nan_as_missing(values: list[float | None]) -> None:
    got = pl.DataFrame({"x": values}, schema={"x": pl.Float64}).select(numeric("x")).to_series().to_list()
    want = [None if v is None or math.isnan(v) else v for v in values]
    assert got == want


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(["1.5", " 2 ", "", " ", "n/a", "-3e2", "1,000"])), max_size=30))
def test_parse_number_matches_reference(values: list[str | None]) -> None:
    got = pl.DataFrame({"x": values}, schema={"x": pl.String}).select(parse_number("x")).to_series().to_list()
    assert got == [number_ref(v) for v in values]
