from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine.errors import DataFileError, SchemaError
from engine.tables.schema import TableSchema, infer_schema


def table(n: int = 100, **extra: list[object]) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    base = {
        "cust": [f"K{i:05d}" for i in range(n)],
        "row_no": list(range(n)),
        "fee": rng.normal(10, 2, n).tolist(),
        "plan": rng.choice(["a", "b", "c"], n).tolist(),
        "paperless": rng.choice(["Yes", "No"], n).tolist(),
        "total": [" " if i % 10 == 0 else f"{i * 1.5:.2f}" for i in range(n)],
        "constant": ["x"] * n,
        "surname": [f"name{i % 60}" for i in range(n)],
        "label": rng.choice(["Yes", "No"], n).tolist(),
    }
    base.update(extra)
    return pl.DataFrame(base)


def test_infers_kinds_and_exclusions() -> None:
    s = infer_schema(table(), label="label")
    kinds = {c.name: (c.kind, c.wire) for c in s.columns}
    assert kinds == {
        "fee": ("numeric", "FP32"),
        "plan": ("categorical", "BYTES"),
        "paperless": ("boolean", "BYTES"),
        "total": ("numeric", "FP32"),  # numbers written as text, blanks included
    }
    assert set(s.excluded) == {"cust", "row_no", "constant", "surname"}
    assert s.id_column == "cust"
    assert s.positive == "Yes"


def test_explicit_id_wins_and_is_never_a_feature() -> None:
    s = infer_schema(table(), label="label", id_column="row_no")
    assert s.id_column == "row_no"
    assert "row_no" not in s.names


@pytest.mark.parametrize(
    ("values", "positive", "expected"),
    [
        (["Yes", "No"], None, "Yes"),
        (["1", "0"], None, "1"),
        (["True", "False"], None, "True"),
        (["churned", "stayed"], "churned", "churned"),
        (["A", "B"], "b", "B"),
    ],
)
def test_label_values(values: list[str], positive: str | None, expected: str) -> None:
    df = table(label=[values[i % 2] for i in range(100)])
    s = infer_schema(df, label="label", positive=positive)
    assert s.positive == expected
    y = s.labels(df)
    assert y.tolist() == [int(values[i % 2] == expected) for i in range(100)]


def test_label_that_cannot_be_read_names_the_fix() -> None:
    df = table(label=["churned" if i % 2 else "stayed" for i in range(100)])
    with pytest.raises(SchemaError, match="pass --positive"):
        infer_schema(df, label="label")
    with pytest.raises(SchemaError, match="exactly two values"):
        infer_schema(table(label=[str(i % 3) for i in range(100)]), label="label")
    with pytest.raises(SchemaError, match="not a value"):
        infer_schema(table(), label="label", positive="maybe")


def test_missing_label_column_is_one_sentence() -> None:
    with pytest.raises(DataFileError, match="label column 'Churn' is not in the table"):
        infer_schema(table(), label="Churn")


def test_json_round_trip_keeps_everything() -> None:
    s = infer_schema(table(), label="label")
    assert TableSchema.from_json(s.to_json()) == s


def test_features_follow_schema_with_unseen_and_missing() -> None:
    s = infer_schema(table(), label="label")
    new = pl.DataFrame({"fee": [1.0, None], "plan": ["zzz", None], "paperless": ["yes", "?"], "total": ["3", "x"]})
    x = s.features(new)
    assert x.dtype == np.float32 and x.shape == (2, 4)
    assert x[0, 0] == 1.0 and np.isnan(x[1, 0])
    assert np.isnan(x[:, 1]).all()  # unseen category and null are both missing
    assert x[0, 2] == 1.0 and np.isnan(x[1, 2])
    assert x[0, 3] == 3.0 and np.isnan(x[1, 3])
