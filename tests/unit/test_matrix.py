"""The memoised small-batch features equal the Polars kernels, value for value."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.families.churn import ChurnScorer
from engine.tables import matrix
from engine.tables.matrix import OnlineFeatures, polars_matrix
from engine.tables.schema import Column, infer_schema
from kernels import BOOLEAN_SPELLINGS


def same(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.nan_to_num(a), np.nan_to_num(b))


def random_rows(scorer: ChurnScorer, data: st.DataObject, n: int) -> dict[str, np.ndarray]:
    rows: dict[str, np.ndarray] = {}
    for col in scorer.schema.columns:
        if col.wire == "FP32":
            floats = st.one_of(st.floats(width=32, allow_infinity=False), st.just(float("nan")))
            rows[col.name] = np.array(data.draw(st.lists(floats, min_size=n, max_size=n)), dtype=np.float32)
        else:
            known = list(col.vocabulary or BOOLEAN_SPELLINGS)
            text = st.one_of(st.none(), st.sampled_from(known), st.text(max_size=8))
            rows[col.name] = np.array(data.draw(st.lists(text, min_size=n, max_size=n)), dtype=object)
    return rows


@settings(max_examples=80, deadline=None)
@given(st.data(), st.integers(min_value=1, max_value=20))
def test_online_equals_polars(scorer: ChurnScorer, data: st.DataObject, n: int) -> None:
    rows = random_rows(scorer, data, n)
    online = OnlineFeatures(scorer.schema).matrix(rows)
    reference = polars_matrix(scorer.schema, scorer.encoder.exprs, rows, engine="cpu")
    same(online, reference)


def test_scorer_uses_both_paths_with_one_answer(scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    from tests.conftest import request_arrays

    rows = scorer.validate(request_arrays(scorer, customers.head(200)))
    small = np.concatenate([scorer.features({k: v[i : i + 10] for k, v in rows.items()}) for i in range(0, 200, 10)])
    same(small, scorer.features(rows))  # 200 rows go through Polars, 10-row slices through the tables


def test_boolean_and_unknown_spellings_and_boolean_dtype() -> None:
    df = pl.DataFrame(
        {
            "flag": [True, False] * 30,
            "yn": ["Yes", "No", "No"] * 20,
            "y": ["Yes", "No"] * 30,
        }
    )
    schema = infer_schema(df, label="y")
    kinds = {c.name: (c.kind, c.wire) for c in schema.columns}
    assert kinds == {"flag": ("boolean", "FP32"), "yn": ("boolean", "BYTES")}
    train = schema.features(df.head(2))
    assert train.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    served = {"flag": np.array([1.0, 0.0, np.nan], np.float32), "yn": np.array(["YES", "nope", None], dtype=object)}
    exprs = schema.expressions(schema.wire_dtypes())
    same(OnlineFeatures(schema).matrix(served), polars_matrix(schema, exprs, served, engine="cpu"))
    got = OnlineFeatures(schema).matrix(served)
    assert got[0].tolist() == [1.0, 1.0] and got[1, 0] == 0.0 and np.isnan(got[1, 1]) and np.isnan(got[2]).all()


def test_unseen_values_are_computed_each_time_never_cached(
    scorer: ChurnScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    online = OnlineFeatures(scorer.schema)
    texts = [c for c in scorer.schema.columns if c.wire == "BYTES"]
    calls: list[tuple[str, list[object]]] = []
    kernel = matrix._kernel

    def counted(column: Column, values: list[object], dtype: pl.DataType) -> np.ndarray:
        calls.append((column.name, values))
        return kernel(column, values, dtype)

    monkeypatch.setattr(matrix, "_kernel", counted)
    rows = {c.name: np.array([np.nan, 1.5, 0.0], dtype=np.float32) for c in scorer.schema.columns}
    # Row 1 of the first and last text columns holds a value no table knows; every other text is known.
    for col in texts:
        rows[col.name] = np.array([None, (col.vocabulary or BOOLEAN_SPELLINGS)[0], None], dtype=object)
    rows[texts[0].name][1] = rows[texts[-1].name][1] = "never seen"
    for _ in range(2):
        same(online.matrix(rows), polars_matrix(scorer.schema, scorer.encoder.exprs, rows, engine="cpu"))
    assert calls == [(texts[0].name, ["never seen"]), (texts[-1].name, ["never seen"])] * 2
