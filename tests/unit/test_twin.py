"""The feature-tensor twin of churn: the same answers as the raw-column model, from one FP32 tensor.

Parity is checked the way a client reaches the twin: raw rows encoded by :class:`clients.features.FeatureRoute`
from the twin's published config, scored by the twin, decoded back, compared with the raw model's answer.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from clients.features import FeatureRoute
from engine.errors import InvalidInputError, ServerError
from engine.families.churn import ChurnScorer
from engine.families.churn.train import ChurnTrainResult
from engine.families.churn.twin import ChurnTwinScorer
from engine.families.twin import INPUT, decode_indices
from engine.serving.repository import ModelRepository
from tests.conftest import request_arrays, with_holes


@pytest.fixture(scope="module")
def twin(trained: ChurnTrainResult, repository: ModelRepository) -> ChurnTwinScorer:
    folder = repository.model_dir("churn_features") / str(trained.version)
    return ChurnTwinScorer.load(folder)


@pytest.fixture(scope="module")
def route(repository: ModelRepository) -> FeatureRoute:
    config = (repository.model_dir("churn_features") / "config.pbtxt").read_text(encoding="utf-8")
    return FeatureRoute.from_parameters("churn", _parameters(config))


def _parameters(config: str) -> dict[str, str]:
    """The string parameters of a rendered config.pbtxt (what the server reports as the config's parameters)."""
    import json
    import re

    found = re.findall(r'key: ("(?:[^"\\]|\\.)*")\s*value: \{ string_value: ("(?:[^"\\]|\\.)*") \}', config)
    return {json.loads(k): json.loads(v) for k, v in found}


def _through_twin(route: FeatureRoute, twin: ChurnTwinScorer, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sent = route.encode(arrays)
    answer = twin.score_rows(twin.validate(sent))
    return route.decode({route.outputs([name])[0]: answer[name] for name in answer})


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_twin_answers_what_the_raw_model_answers(
    scorer: ChurnScorer, twin: ChurnTwinScorer, route: FeatureRoute, customers: pl.DataFrame, rows: int
) -> None:
    arrays = with_holes(scorer, request_arrays(scorer, customers.head(max(rows, 2)))) if rows > 1 else None
    arrays = arrays or request_arrays(scorer, customers.head(1))
    raw = scorer.score_rows(scorer.validate(arrays))
    via = _through_twin(route, twin, arrays)
    np.testing.assert_array_equal(via["churn_probability"], raw["churn_probability"])
    assert [[r.decode() for r in row] for row in via["reason_codes"]] == raw["reason_codes"].tolist()
    assert [a.decode() for a in via["retention_action"]] == raw["retention_action"].tolist()
    # The sample has customers above the threshold: actions and reasons are not all empty.
    if rows == 300:
        assert {a for a in raw["retention_action"]} - {"none"}
        assert (raw["reason_codes"][:, 0] != "").any()


def test_twin_config_publishes_what_a_client_needs(route: FeatureRoute, scorer: ChurnScorer) -> None:
    assert route.model == "churn_features"
    assert route.encoder.schema == scorer.schema
    assert route.outputs(["churn_probability", "reason_codes"]) == ["churn_probability", "reason_codes"]
    raw_out, names = route.codes.decoding["retention_action"]
    assert raw_out == "retention_action"
    assert [n.decode() for n in names] == scorer.action_names


def test_a_bad_raw_row_fails_in_the_client_with_the_raw_models_sentence(
    scorer: ChurnScorer, route: FeatureRoute, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(2))
    number = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    arrays[number] = arrays[number].copy()
    arrays[number][1, 0] = np.inf
    with pytest.raises(InvalidInputError) as raw:
        scorer.validate(arrays)
    with pytest.raises(InvalidInputError) as client:
        route.encode(arrays)
    assert str(client.value) == f"model 'churn' rejected the request: {raw.value}"
    assert number in str(client.value)


def test_the_twin_refuses_features_no_encoder_makes(twin: ChurnTwinScorer, scorer: ChurnScorer) -> None:
    columns = scorer.schema.columns
    width = len(columns)
    good = np.full((2, width), np.nan, dtype=np.float32)
    assert twin.validate({INPUT: good})[INPUT].shape == (2, width)
    cat = next(j for j, c in enumerate(columns) if c.kind == "categorical")
    num = next(j for j, c in enumerate(columns) if c.kind == "numeric")
    top = len(columns[cat].vocabulary)
    for j, value, says in [
        (cat, 0.5, f"has 0.5 for '{columns[cat].name}' at row 1, not a code 0-{top - 1}"),
        (cat, float(top), f"has {float(top)!r} for '{columns[cat].name}' at row 1, not a code"),
        (cat, -1.0, f"has -1.0 for '{columns[cat].name}' at row 1"),
        (num, np.inf, f"infinite value for '{columns[num].name}' at row 1"),
    ]:
        bad = good.copy()
        bad[1, j] = value
        with pytest.raises(InvalidInputError) as err:
            twin.validate({INPUT: bad})
        assert says in str(err.value)
    with pytest.raises(InvalidInputError, match=rf"must be FP32 \[batch, {width}\], got float64"):
        twin.validate({INPUT: good.astype(np.float64)})
    with pytest.raises(InvalidInputError, match=rf"got float32 \[2, {width - 1}\]"):
        twin.validate({INPUT: good[:, 1:]})
    with pytest.raises(InvalidInputError, match="takes one input, 'features'"):
        twin.validate({"tenure": good})


def test_decode_indices_reads_minus_one_and_strays_as_empty() -> None:
    out = decode_indices(np.array([[1, -1, 7]], dtype=np.int32), ["a", "b"], empty=b"")
    assert out.tolist() == [["b", b"", b""]]


def test_a_twin_with_an_unknown_encoding_is_one_sentence() -> None:
    with pytest.raises(ServerError, match="feature encoding 'onnx'"):
        FeatureRoute.from_parameters("churn", {"encoding": "onnx", "schema": "{}"})
    with pytest.raises(ServerError, match="no readable schema"):
        FeatureRoute.from_parameters("churn", {"encoding": "table", "schema": "not json"})


def test_a_client_without_polars_sends_raw_columns_and_requiring_the_twin_says_why(
    route: FeatureRoute, repository: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clients.grpc
    from clients import ModelClient
    from engine.errors import UsageError

    config = (repository.model_dir("churn_features") / "config.pbtxt").read_text(encoding="utf-8")
    parameters = _parameters(config)
    with ModelClient("127.0.0.1:1", "churn") as client:
        assert client._take_route(True, parameters) is not None  # this install encodes
    monkeypatch.setattr(clients.grpc, "can_encode", lambda: False)
    with ModelClient("127.0.0.1:1", "churn") as client:
        assert client._take_route(True, parameters) is None  # a client-only install: raw columns
    with ModelClient("127.0.0.1:1", "churn", features=True) as client:
        with pytest.raises(UsageError, match=r"needs Polars: install finscore\[backend\], or features=False"):
            client._take_route(True, parameters)
