"""The propensity model through the real bundled Triton: the served answers are the in-process scorer's, and a
bad request fails alone."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from engine.families.propensity import PropensityScorer, PropensityTrainResult
from engine.serving.server import TritonServer
from engine.tables.io import read_table
from tests.conftest import request_arrays
from tests.integration.test_churn_served import raw_request


def test_served_propensity_equals_in_process(
    server: TritonServer, propensity_trained: PropensityTrainResult, offer_customers_path: object
) -> None:
    scorer = PropensityScorer.load(propensity_trained.path)
    rows = read_table(offer_customers_path).head(64)  # type: ignore[arg-type]
    arrays = request_arrays(scorer, rows)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    answer = client.infer("propensity", raw_request(arrays))
    local = scorer.score(arrays)
    np.testing.assert_allclose(answer.as_numpy("propensity").ravel(), local["propensity"], rtol=1e-6)
    served_reasons = answer.as_numpy("reason_codes").astype(str)
    assert (served_reasons == local["reason_codes"].astype(str)).all()


def test_a_bad_request_fails_alone(server: TritonServer, propensity_trained: PropensityTrainResult) -> None:
    scorer = PropensityScorer.load(propensity_trained.path)
    rows = read_table(propensity_trained.path / "reference.parquet").head(2)
    arrays = request_arrays(scorer, rows)
    number = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    bad = dict(arrays)
    bad[number] = np.array([[np.inf], [1.0]], dtype=np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        client.infer("propensity", raw_request(bad))
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert number in info.value.message()
    assert client.infer("propensity", raw_request(arrays)).as_numpy("propensity").shape == (2, 1)
