"""The segments model through the real bundled Triton: served segments, names and reasons equal the in-process
scorer's, and a bad request fails alone with INVALID_ARGUMENT."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from engine.families.segments import SegmentScorer, SegmentsTrainResult
from engine.serving.server import TritonServer
from tests.conftest import request_arrays, with_holes


def infer_inputs(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, arr in arrays.items():
        t = grpcclient.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else "FP32")
        t.set_data_from_numpy(arr)
        inputs.append(t)
    return inputs


def served(server: TritonServer, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("segment", "segment_name", "reason_codes")]
    result = client.infer("segments", infer_inputs(arrays), outputs=outputs)
    return {o.name(): result.as_numpy(o.name()) for o in outputs}


def decoded(values: np.ndarray) -> list:
    return [
        [v.decode() if isinstance(v, bytes) else v for v in row] for row in values.reshape(len(values), -1).tolist()
    ]


def test_served_segments_equal_in_process(
    server: TritonServer, segments_trained: SegmentsTrainResult, marketing: pl.DataFrame
) -> None:
    df = marketing
    scorer = SegmentScorer.load(segments_trained.path)
    for frame in (df.head(200), df.slice(300, 3)):  # the Polars path and the one-row kernels
        arrays = with_holes(scorer, request_arrays(scorer, frame))  # type: ignore[arg-type]
        out = served(server, arrays)
        local = scorer.score(arrays)
        assert out["segment"].reshape(-1).tolist() == local["segment"].tolist()
        assert decoded(out["segment_name"]) == [[n] for n in local["segment_name"].tolist()]
        assert decoded(out["reason_codes"]) == local["reason_codes"].tolist()
    assert {s.id for s in segments_trained.segments} >= set(local["segment"].tolist())


def test_a_bad_request_fails_alone(
    server: TritonServer, segments_trained: SegmentsTrainResult, marketing: pl.DataFrame
) -> None:
    df = marketing
    scorer = SegmentScorer.load(segments_trained.path)
    arrays = request_arrays(scorer, df.head(4))  # type: ignore[arg-type]
    bad = arrays | {"age": np.array([[1.0], [np.inf], [3.0], [4.0]], dtype=np.float32)}
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        client.infer("segments", infer_inputs(bad))
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert "'age'" in info.value.message() and "infinite" in info.value.message()
    good = served(server, arrays)
    assert good["segment"].reshape(-1).tolist() == scorer.score(arrays)["segment"].tolist()
    assert client.is_model_ready("segments")
