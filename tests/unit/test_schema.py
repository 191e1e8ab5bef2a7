from __future__ import annotations

from collections.abc import Callable
from unittest.mock import patch

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import DataFileError, InvalidInputError, SchemaError
from engine.tables import checks
from engine.tables.checks import validate_columns
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


# validate_columns checks a well-formed request a block at a time and falls back to the column-by-column
# checks when anything is amiss: both must give the same arrays, or the same sentence, for any request.

_SCHEMA = infer_schema(table(), label="label")  # fee, total: FP32; plan, paperless: BYTES
_TEXT = ["a", "Yes", "no", "", "é", " x ", "\x00"]


def _number_column(draw: st.DrawFn, n: int, forms: list[str]) -> object:
    values = draw(st.lists(st.floats(width=32, allow_infinity=False), min_size=n, max_size=n))
    form = draw(st.sampled_from(forms))
    col = np.array(values, dtype=np.float32).reshape(-1, 1)
    if form == "fp64":
        return col.astype(np.float64) / 3  # rounded when cast back to float32
    if form == "int":
        return np.arange(n, dtype=np.int64).reshape(-1, 1) * 2**40 + 1  # rounded when cast to float32
    if form == "bool":
        return (col > 0).reshape(-1, 1)
    if form == "flat":
        return col.reshape(-1)
    if form == "inf" and n:
        col[draw(st.integers(0, n - 1)), 0] = np.inf
    if form == "text":
        return np.array([b"1"] * n, dtype=object).reshape(-1, 1)
    if form == "wide":
        return np.hstack([col, col])
    if form == "long":
        return np.vstack([col, col[:1]]) if n else np.zeros((1, 1), np.float32)
    return col


def _text_column(draw: st.DrawFn, n: int, forms: list[str]) -> object:
    values = draw(st.lists(st.sampled_from(_TEXT), min_size=n, max_size=n))
    form = draw(st.sampled_from(forms))
    encoded = [v.encode() for v in values]
    if form == "str":
        return np.array(values, dtype=object).reshape(-1, 1)
    if form == "S":
        return np.array(encoded, dtype="S").reshape(-1, 1) if n else np.zeros((0, 1), "S1")
    if form == "U":
        return np.array(values, dtype="U").reshape(-1, 1) if n else np.zeros((0, 1), "U1")
    if form == "none" and n:
        return np.array([None, *values[1:]], dtype=object).reshape(-1, 1)
    if form == "mixed" and n:
        return np.array([values[0], *encoded[1:]], dtype=object).reshape(-1, 1)
    if form == "bad" and n:
        encoded[draw(st.integers(0, n - 1))] = draw(st.sampled_from([b"\xff", b"a\xc3", b"\xed\xa0\x80", b"\xc0\x80"]))
    if form == "int" and n:
        return np.array([*encoded[:-1], 0], dtype=object).reshape(-1, 1)
    if form == "float":
        return np.zeros((n, 1), np.float32)
    if form == "list":
        return [[v] for v in encoded]
    return np.array(encoded, dtype=object).reshape(-1, 1)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(0, 5))
    if draw(st.booleans()):  # shaped alike, as Triton delivers requests (or 1-D): most of these pass
        shape = draw(st.sampled_from([(-1, 1), (-1,)]))
        text = draw(st.sampled_from(["bytes", "str", "none"]))
        return {
            c.name: np.asarray(
                _number_column(draw, n, ["fp32"]) if c.wire == "FP32" else _text_column(draw, n, [text])
            ).reshape(shape)
            for c in _SCHEMA.columns
        }
    numbers = ["fp32", "fp64", "int", "bool", "flat", "inf", "text", "wide", "long"]
    texts = ["bytes", "str", "S", "U", "none", "mixed", "bad", "int", "float", "list"]
    return {
        c.name: _number_column(draw, n, numbers) if c.wire == "FP32" else _text_column(draw, n, texts)
        for c in _SCHEMA.columns
    }


def _outcome(check: Callable[[], dict[str, np.ndarray]]) -> object:
    try:
        rows = check()
    except InvalidInputError as exc:
        return str(exc)
    out: dict[str, object] = {}
    for c in _SCHEMA.columns:
        arr = rows[c.name]
        assert arr.ndim == 1
        if c.wire == "FP32":
            assert arr.dtype == np.float32
            out[c.name] = ("f", arr.tobytes())  # bit for bit, NaN included
        else:
            assert arr.dtype == object
            out[c.name] = [(type(v), v) for v in arr.tolist()]
    return out


@settings(max_examples=300, deadline=None)
@given(requests(), st.booleans())
def test_block_checks_equal_the_column_checks(columns: dict[str, object], arrow: bool) -> None:
    with patch.object(checks, "ARROW_TEXT", 0 if arrow else checks.ARROW_TEXT):
        got = _outcome(lambda: validate_columns(_SCHEMA, columns, model="m"))
    assert got == _outcome(lambda: checks._by_column(_SCHEMA, columns))


def test_large_text_goes_through_arrow_with_the_same_sentence() -> None:
    n = checks.ARROW_TEXT  # two text columns: twice the threshold
    plan = np.array([b"a", b"", "é".encode()] * n, dtype=object).reshape(-1, 1)[:n]
    columns = {
        "fee": np.ones((n, 1), np.float32),
        "total": np.ones((n, 1), np.float32),
        "plan": plan,
        "paperless": np.array([b"Yes"] * n, dtype=object).reshape(-1, 1),
    }
    rows = validate_columns(_SCHEMA, columns, model="m")
    assert rows["plan"][:4].tolist() == ["a", None, "é", "a"] and rows["paperless"][-1] == "Yes"
    columns["paperless"] = columns["paperless"].copy()
    columns["paperless"][n - 2, 0] = b"\xffno"
    with pytest.raises(InvalidInputError, match=f"^input 'paperless' row {n - 2} is not valid UTF-8 text$"):
        validate_columns(_SCHEMA, columns, model="m")
