"""The fused feature kernel: against its NumPy twin on random data, and against the Polars expressions that
define the threat features (numbers, CSV text, yes/no, missing and unseen values)."""

from __future__ import annotations

import doctest

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.scaled_rows
from engine.families.threat import ThreatScorer
from engine.families.threat.features import ThreatFeatures
from engine.tables.schema import Column, TableSchema
from kernels.scaled_rows import AS_IS, CATEGORY, NUMBER, category_index, scale_rows, scale_rows_ref

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-1100, 1100).map(float),  # whole numbers, whose logs the kernel looks up below 1024
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1023.0, 1024.0, 1023.5, 1e300, -1e-300]),
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from([NUMBER, AS_IS, CATEGORY]), min_size=1, max_size=6),
    st.integers(min_value=0, max_value=30),
    st.data(),
)
def test_scale_rows_matches_reference(kinds: list[int], rows: int, data: st.DataObject) -> None:
    widths = np.array([data.draw(st.integers(1, 5)) if k == CATEGORY else 1 for k in kinds])
    columns = []
    for kind, width in zip(kinds, widths, strict=True):
        if kind == CATEGORY:  # an index, -1 (missing), or out of range
            codes = data.draw(st.lists(st.integers(-1, int(width)), min_size=rows, max_size=rows))
            columns.append(np.array(codes, dtype=np.float64))
        else:
            columns.append(np.array(data.draw(st.lists(VALUES, min_size=rows, max_size=rows)), dtype=np.float64))
    raw = np.asfortranarray(np.column_stack(columns) if rows else np.empty((0, len(kinds))))
    centers = np.array(data.draw(st.lists(st.floats(-5, 5), min_size=len(kinds), max_size=len(kinds))))
    scales = np.array(data.draw(st.lists(st.floats(0.1, 5), min_size=len(kinds), max_size=len(kinds))))
    got = scale_rows(raw, np.array(kinds), centers, scales, widths, clip=10.0)
    want = scale_rows_ref(raw, np.array(kinds), centers, scales, widths, clip=10.0)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (rows, widths.sum())
    np.testing.assert_array_equal(got, want)


def test_category_index_marks_missing_and_unseen() -> None:
    frame = pl.DataFrame({"p": ["udp", "tcp", None, "", "icmp"]})
    assert frame.select(category_index("p", ["tcp", "udp"])).to_series().to_list() == [1.0, 0.0, -1.0, -1.0, 2.0]
    # An empty string that is in the vocabulary is a value like the others.
    assert frame.select(category_index("p", ["", "tcp"])).to_series().to_list() == [2.0, 1.0, -1.0, 0.0, 2.0]


def _holes(frame: pl.DataFrame, features: ThreatFeatures) -> pl.DataFrame:
    """``frame`` after four rows of nulls, NaN, infinities, negatives, and unseen or empty categories."""
    bad = {
        c.name: [None, "", "never seen", None] if c.kind == "categorical" else [None, float("nan"), float("inf"), -3.5]
        for c in features.schema.columns
    }
    head = pl.DataFrame(bad).with_columns(pl.col(n).cast(frame.schema[n], strict=False) for n in bad)
    return pl.concat([head, frame.select(list(bad))])


def test_fused_matrix_equals_the_expressions(threat_scorer: ThreatScorer, events: pl.DataFrame) -> None:
    features = threat_scorer.features
    frame = _holes(events.head(500).select(features.schema.names), features)
    for table in (frame, frame.with_columns(pl.all().cast(pl.String))):  # typed, and as CSV text
        fused = features.matrix(table)
        polars = features.matrix(table, exprs=features.expressions(table.schema))
        assert fused.dtype == np.float32 and fused.flags.c_contiguous
        np.testing.assert_array_equal(fused, polars)


def test_fused_matrix_reads_yes_no_columns_like_the_expressions() -> None:
    schema = TableSchema(
        columns=(
            Column("vpn", "boolean", "BYTES"),
            Column("admin", "boolean", "FP32"),
            Column("bytes", "numeric", "FP32"),
        )
    )
    features = ThreatFeatures(schema, {"bytes": (1.0, 2.0)})
    frame = pl.DataFrame(
        {
            "vpn": ["yes", "No", None, "maybe", "TRUE"],
            "admin": [1.0, 0.0, None, float("nan"), 1.0],
            "bytes": [0, 10, None, -5, 10**9],
        }
    )
    np.testing.assert_array_equal(
        features.matrix(frame), features.matrix(frame, exprs=features.expressions(frame.schema))
    )


def test_the_examples_run() -> None:
    assert doctest.testmod(kernels.scaled_rows).failed == 0


@pytest.mark.parametrize("vocabulary", [[], ["tcp"], ["", "tcp", "udp"], [f"s{i}" for i in range(40)]])
def test_category_index_is_the_same_by_equality_tests_and_by_look_up(
    vocabulary: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    pool = [*vocabulary, "", None, "other", "TCP"]
    frame = pl.DataFrame({"p": [pool[i] for i in rng.integers(0, len(pool), 500)]}, schema={"p": pl.String})

    def code(v: str | None) -> float:
        if v is None or (v == "" and "" not in vocabulary):
            return -1.0
        return float(vocabulary.index(v)) if v in vocabulary else float(len(vocabulary))

    for chained in (0, 100):  # every vocabulary both ways
        monkeypatch.setattr(kernels.scaled_rows, "_CHAINED", chained)
        assert frame.select(category_index("p", vocabulary)).to_series().to_list() == [code(v) for v in frame["p"]]
