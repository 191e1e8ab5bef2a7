from __future__ import annotations

import math

import numpy as np
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


@given(
    st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False, width=32)), min_size=1, max_size=40),
    st.floats(-5, 5),
    st.floats(0.01, 10),
)
def test_robust_scaled_matches_numpy(values: list[float | None], center: float, scale: float) -> None:
    from kernels import robust_scaled

    got = pl.DataFrame({"x": values}, schema={"x": pl.Float32}).select(
        robust_scaled(pl.col("x"), center=center, scale=scale, clip=4.0)
    )
    x = np.array([np.nan if v is None else v for v in values], dtype=np.float32).astype(np.float64)
    ref = np.clip((np.sign(x) * np.log1p(np.abs(x)) - center) / scale, -4.0, 4.0)
    ref = np.where(np.isnan(ref), 0.0, ref).astype(np.float32)
    np.testing.assert_allclose(got.to_series().to_numpy(), ref, rtol=1e-5, atol=1e-6)


def test_one_hot_marks_unseen_values_and_leaves_missing_empty() -> None:
    from kernels import one_hot, one_hot_names

    df = pl.DataFrame({"s": ["tcp", "udp", "gre", None, ""]})
    out = df.select(one_hot("s", ["tcp", "udp"]))
    assert out.columns == one_hot_names("s", ["tcp", "udp"]) == ["s=tcp", "s=udp", "s=<unseen>"]
    assert out.rows() == [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0), (0, 0, 0)]
