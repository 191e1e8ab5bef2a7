"""engine.security.jsontext: a frame's rows as JSON members, read back by ``json.loads`` as the same values."""

from __future__ import annotations

import datetime
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInputError
from engine.security.jsontext import json_members

_TEXT = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["plain", 'say "hi"', "back\\slash", "é", "\n"]))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            _TEXT,
            st.one_of(st.none(), st.integers(-(2**62), 2**62)),
            st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
            st.one_of(st.none(), st.booleans()),
        ),
        max_size=8,
    )
)
def test_each_row_reads_back_as_its_values(rows: list[tuple]) -> None:
    frame = pl.DataFrame(
        rows, schema={"text": pl.String, "n": pl.Int64, "x": pl.Float64, "yes": pl.Boolean}, orient="row"
    ).with_columns(pl.col("text").cast(pl.Categorical).alias("cat"))
    members = json_members(frame).to_list()
    assert len(members) == frame.height
    for line, row in zip(members, frame.iter_rows(named=True), strict=True):
        assert line.isascii()
        assert json.loads("{" + line + "}") == row


def test_a_nan_or_infinity_is_refused_with_its_column() -> None:
    frame = pl.DataFrame({"id": ["a", "b"], "score": [0.5, float("nan")]})
    with pytest.raises(InvalidInputError, match="column 'score' holds a NaN or infinite number"):
        json_members(frame)


def test_other_types_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="JSON lines take text, numbers or yes/no columns"):
        json_members(pl.DataFrame({"when": [datetime.date(2024, 1, 1)]}))


@pytest.mark.parametrize("rows", [slice(1, 2), slice(0, 2), slice(2, 3)])
def test_a_slice_is_escaped_by_its_own_values_not_its_neighbours(rows: slice) -> None:
    texts = ['say "hi"', "plain", "é"]
    frame = pl.DataFrame({"text": texts}).slice(rows.start, rows.stop - rows.start)
    members = json_members(frame).to_list()
    assert [json.loads("{" + m + "}")["text"] for m in members] == texts[rows]
    assert all(m.isascii() for m in members)
