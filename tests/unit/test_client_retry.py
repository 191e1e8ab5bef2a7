"""Clients send again what a server heals (it never reached the model), and nothing else; they give up with one
sentence that names what happened."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from clients import ModelClient
from clients.errors import retry_reason
from clients.tensors import InputSpec
from engine.errors import InvalidInputError, ModelNotReadyError, ServerUnavailableError

REFUSED = InferenceServerException(
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused",
    status="StatusCode.UNAVAILABLE",
)
DEAD_STUB = InferenceServerException("Stub process 'churn_0_0' is not healthy.", status="StatusCode.INTERNAL")
RELOADING = InferenceServerException(
    "Request for unknown model: 'churn' has no available versions", status="StatusCode.NOT_FOUND"
)
BAD_INPUT = InferenceServerException("input 'tenure' must be FP32", status="StatusCode.INVALID_ARGUMENT")
MODEL_FAILED = InferenceServerException("internal error while scoring", status="StatusCode.INTERNAL")
TLS = InferenceServerException("Ssl handshake failed: CERTIFICATE_VERIFY_FAILED", status="StatusCode.UNAVAILABLE")


@pytest.mark.parametrize("exc", [REFUSED, DEAD_STUB, RELOADING])
def test_what_never_reached_the_model_is_sent_again(exc: InferenceServerException) -> None:
    assert retry_reason(exc, seen=True)


@pytest.mark.parametrize("exc", [BAD_INPUT, MODEL_FAILED, TLS])
def test_what_the_model_refused_or_a_misconfiguration_is_not(exc: InferenceServerException) -> None:
    assert retry_reason(exc, seen=True) is None


@pytest.mark.parametrize("exc", [REFUSED, RELOADING])
def test_a_first_call_that_fails_is_reported_at_once(exc: InferenceServerException) -> None:
    """No server at the first call, or a model name the server never knew: a mistake, not an outage."""
    assert retry_reason(exc, seen=False) is None


class _Flaky:
    """A stand-in for tritonclient's server client whose ``infer`` fails with ``errors`` first."""

    def __init__(self, errors: list[InferenceServerException]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return _Result()

    def close(self) -> None:
        pass


class _Result:
    def as_numpy(self, name: str) -> np.ndarray:
        return np.array([[0.5]], dtype=np.float32)


def _client(errors: list[InferenceServerException], retry_for: float) -> tuple[ModelClient, _Flaky]:
    client = ModelClient("127.0.0.1:1", "churn", retry_for=retry_for, features=False)
    client._client.close()
    flaky = _Flaky(errors)
    client._client = flaky
    client._inputs = [InputSpec("tenure", "FP32")]  # the metadata was read: the model was seen
    client._outputs = ["churn_probability"]
    return client, flaky


def test_an_outage_that_heals_is_ridden_out() -> None:
    client, flaky = _client([REFUSED, DEAD_STUB, RELOADING], retry_for=30)
    out = client.infer_arrays({"tenure": np.array([[3.0]], dtype=np.float32)})
    assert flaky.calls == 4
    assert out["churn_probability"].tolist() == [[0.5]]


def test_a_refused_request_is_not_sent_twice() -> None:
    client, flaky = _client([BAD_INPUT], retry_for=30)
    with pytest.raises(InvalidInputError, match="tenure"):
        client.infer_arrays({"tenure": np.array([[3.0]], dtype=np.float32)})
    assert flaky.calls == 1


def test_giving_up_names_the_server_that_went_away() -> None:
    client, flaky = _client([REFUSED] * 1000, retry_for=0.3)
    with pytest.raises(ServerUnavailableError, match=r"went away and did not come back within 0.3 s") as caught:
        client.infer_arrays({"tenure": np.array([[3.0]], dtype=np.float32)})
    assert "\n" not in str(caught.value)
    assert 2 <= flaky.calls < 1000


def test_giving_up_names_the_model_that_did_not_come_back() -> None:
    client, _ = _client([DEAD_STUB] * 1000, retry_for=0.2)
    with pytest.raises(ModelNotReadyError, match=r"'churn' .* did not come back within 0.2 s: .*stub died"):
        client.infer_arrays({"tenure": np.array([[3.0]], dtype=np.float32)})


def test_retry_for_zero_never_retries() -> None:
    client, flaky = _client([DEAD_STUB], retry_for=0)
    with pytest.raises(Exception, match="not healthy"):
        client.infer_arrays({"tenure": np.array([[3.0]], dtype=np.float32)})
    assert flaky.calls == 1
