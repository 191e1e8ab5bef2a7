"""model.py and engine.serving.model with a fake ``triton_python_backend_utils``: no server needed."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.families.churn import ChurnScorer, ChurnTrainResult
from engine.serving.model import as_output
from tests.conftest import request_arrays


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class FakeError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self.message, self.code = message, code


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor] | None = None, error: FakeError | None = None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors or []}
        self.error = error


class FakeRequest:
    def __init__(self, arrays: dict[str, np.ndarray], outputs: list[str] | None = None) -> None:
        self.tensors = {k: FakeTensor(k, v) for k, v in arrays.items()}
        self.outputs = outputs or []

    def inputs(self) -> list[FakeTensor]:
        return list(self.tensors.values())

    def requested_output_names(self) -> list[str]:
        return self.outputs


def fake_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")
    mod.Tensor = FakeTensor  # type: ignore[attr-defined]
    mod.TritonError = FakeError  # type: ignore[attr-defined]
    mod.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    return mod


def fraud_shell(version: Path, folder: Path) -> Any:
    """The fraud model.py, initialized on a copy of ``version``'s model folder at ``folder`` (its live state left
    behind); the caller has put :func:`fake_pb_utils` in ``sys.modules``."""
    import shutil

    from engine.families.fraud import fraud_config

    shutil.copytree(version.parent, folder, ignore=shutil.ignore_patterns("state"))
    spec = importlib.util.spec_from_file_location(f"fraud_model_py_{id(folder)}", folder / version.name / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.TritonPythonModel()
    cfg = fraud_config()
    m.initialize(
        {
            "model_config": json.dumps(
                {
                    "name": "fraud",
                    "input": [{"name": t.name} for t in cfg.inputs],
                    "output": [{"name": t.name, "dims": [str(d) for d in t.dims]} for t in cfg.outputs],
                }
            ),
            "model_repository": str(folder),
            "model_version": version.name,
            "model_instance_kind": "CPU",
        }
    )
    return m


@pytest.fixture()
def model(trained: ChurnTrainResult, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("churn_model_py", trained.path / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.TritonPythonModel()
    config = (trained.path.parent / "config.pbtxt").read_text()
    inputs = [{"name": c.name} for c in trained.schema.columns]
    outputs = [
        {"name": "churn_probability", "dims": ["1"]},
        {"name": "reason_codes", "dims": ["3"]},
        {"name": "retention_action", "dims": ["1"]},
    ]
    assert all(f'"{i["name"]}"' in config for i in inputs)
    m.initialize(
        {
            "model_config": json.dumps({"name": "churn", "input": inputs, "output": outputs}),
            "model_repository": str(trained.path.parent),
            "model_version": trained.path.name,
            "model_instance_kind": "CPU",
        }
    )
    return m


def test_committed_shell_is_what_versions_get(trained: ChurnTrainResult) -> None:
    shell = Path(__file__).resolve().parents[2] / "model_repo" / "churn" / "model.py"
    assert (trained.path / "model.py").read_text() == shell.read_text()


def test_batch_scores_each_request_and_matches_scorer(model: Any, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    parts = [customers.slice(0, 1), customers.slice(1, 3), customers.slice(4, 2)]
    responses = model.execute([FakeRequest(request_arrays(scorer, p)) for p in parts])
    assert len(responses) == 3
    expected = scorer.score(request_arrays(scorer, customers.head(6)))
    got = np.concatenate([r.outputs["churn_probability"][:, 0] for r in responses])
    np.testing.assert_allclose(got, expected["churn_probability"], atol=1e-6)
    assert responses[1].outputs["reason_codes"].shape == (3, 3)
    assert responses[1].outputs["reason_codes"].dtype == object
    assert all(isinstance(v, bytes) for v in responses[1].outputs["retention_action"].ravel())


def test_a_failing_metric_or_sample_never_fails_an_answered_request(
    model: Any, scorer: ChurnScorer, customers: pl.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        monitored = None

        def scored(self, outputs: object) -> None:
            raise RuntimeError("metrics down")

        def add(self, rows: object, outputs: object) -> None:
            raise OSError(28, "No space left on device")

        def rejected(self, reason: str, requests: int = 1) -> None:
            raise RuntimeError("metrics down")

        def close(self) -> None:
            pass

    model.metrics, model.sample = Broken(), Broken()
    arrays = request_arrays(scorer, customers.head(3))
    (response,) = model.execute([FakeRequest(arrays)])
    assert response.error is None and response.outputs["churn_probability"].shape == (3, 1)
    bad = {**arrays, next(iter(arrays)): arrays[next(iter(arrays))][:1]}  # refused: counting it fails too
    (refused,) = model.execute([FakeRequest(bad)])
    assert refused.error is not None and refused.error.code == "INVALID_ARG"
    assert "metrics down" in caplog.text or "No space left" in caplog.text  # said in the server's log


def test_bad_request_fails_alone(model: Any, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    good = request_arrays(scorer, customers.head(2))
    bad = request_arrays(scorer, customers.head(2))
    num = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    bad[num] = np.array([[np.inf], [0.0]], dtype=np.float32)
    responses = model.execute([FakeRequest(good), FakeRequest(bad), FakeRequest(good)])
    assert responses[1].error.code == "INVALID_ARG"
    assert num in responses[1].error.message and "infinite" in responses[1].error.message
    for r in (responses[0], responses[2]):
        assert r.error is None and r.outputs["churn_probability"].shape == (2, 1)


def test_unexpected_failure_is_internal_and_generic(
    model: Any, scorer: ChurnScorer, customers: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(rows: dict[str, np.ndarray], **kwargs: object) -> dict[str, np.ndarray]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(model.scorer, "score_rows", boom)
    responses = model.execute([FakeRequest(request_arrays(scorer, customers.head(1)))])
    assert responses[0].error.code == "INTERNAL"
    assert "secret" not in responses[0].error.message


def test_each_request_gets_the_outputs_it_asked_for(model: Any, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    arrays = request_arrays(scorer, customers.head(2))
    some, every = model.execute([FakeRequest(arrays, ["retention_action"]), FakeRequest(arrays)])
    assert list(some.outputs) == ["retention_action"]
    assert set(every.outputs) == {"churn_probability", "reason_codes", "retention_action"}
    np.testing.assert_array_equal(some.outputs["retention_action"], every.outputs["retention_action"])


def test_a_request_whose_columns_differ_in_length_fails_alone_even_when_the_batch_adds_up(
    model: Any, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    """Batched checks join requests: two requests whose faults cancel out in the join must still be caught."""
    first, second = request_arrays(scorer, customers.head(2)), request_arrays(scorer, customers.head(2))
    a = scorer.schema.names[0]
    # Column a has 1 row in the first request and 3 in the second, every other column 2 and 2: 4 rows each.
    first[a], second[a] = first[a][:1], request_arrays(scorer, customers.head(3))[a]
    good = request_arrays(scorer, customers.slice(2, 3))
    responses = model.execute([FakeRequest(first), FakeRequest(good), FakeRequest(second)])
    assert responses[0].error.code == "INVALID_ARG" and "rows" in responses[0].error.message
    assert responses[2].error.code == "INVALID_ARG" and "rows" in responses[2].error.message
    assert responses[1].error is None
    alone = scorer.score(request_arrays(scorer, customers.slice(2, 3)))["churn_probability"]
    np.testing.assert_allclose(responses[1].outputs["churn_probability"][:, 0], alone, atol=1e-6)


def test_an_empty_request_in_a_batch_is_refused_and_the_others_are_scored(
    model: Any, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    empty = request_arrays(scorer, customers.head(0))
    good = request_arrays(scorer, customers.head(2))
    responses = model.execute([FakeRequest(good), FakeRequest(empty), FakeRequest(good)])
    assert responses[1].error.code == "INVALID_ARG" and "no rows" in responses[1].error.message
    assert [r.outputs["churn_probability"].shape for r in (responses[0], responses[2])] == [(2, 1), (2, 1)]


def test_bad_text_fails_alone_with_its_sentence(model: Any, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    """A batch is checked in blocks first; a fault in one request's text still fails that request alone."""
    texts = [c.name for c in scorer.schema.columns if c.wire == "BYTES"]
    good = request_arrays(scorer, customers.head(2))
    bad_utf8, not_text = request_arrays(scorer, customers.head(2)), request_arrays(scorer, customers.head(2))
    bad_utf8[texts[-1]][1, 0] = b"\xffYes"
    not_text[texts[0]] = np.zeros((2, 1), dtype=np.float32)
    responses = model.execute([FakeRequest(good), FakeRequest(bad_utf8), FakeRequest(good), FakeRequest(not_text)])
    assert (responses[1].error.code, responses[1].error.message) == (
        "INVALID_ARG",
        f"input {texts[-1]!r} row 1 is not valid UTF-8 text",
    )
    assert (responses[3].error.code, responses[3].error.message) == (
        "INVALID_ARG",
        f"input {texts[0]!r} must be BYTES (text), got float32 values",
    )
    expected = scorer.score(request_arrays(scorer, customers.head(2)))["churn_probability"]
    for r in (responses[0], responses[2]):
        assert r.error is None
        np.testing.assert_allclose(r.outputs["churn_probability"][:, 0], expected, atol=1e-6)


def test_as_output_encodes_text_and_keeps_bytes_and_none() -> None:
    out = as_output(np.array([["é", "b"], [b"\xff", None]], dtype=object), [2])
    assert out.dtype == object and out.tolist() == [["é".encode(), b"b"], [b"\xff", None]]
    assert as_output(np.array(["a", "bc"], dtype=object), [1]).tolist() == [[b"a"], [b"bc"]]
    assert as_output(np.zeros(3, dtype=np.float32), [1]).shape == (3, 1)


def test_requests_whose_types_differ_are_scored_as_each_alone(
    model: Any, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    """Batches are joined one block per type; a request that sends another type (in-process callers can) is
    checked on its own and scored as if alone."""
    parts = [customers.head(2), customers.slice(2, 3), customers.slice(5, 1)]
    arrays = [request_arrays(scorer, p) for p in parts]
    num = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    text = next(c.name for c in scorer.schema.columns if c.wire == "BYTES")
    arrays[1][num] = arrays[1][num].astype(np.float64)
    arrays[2][text] = arrays[2][text].astype("S")
    responses = model.execute([FakeRequest(a) for a in arrays])
    for r, part in zip(responses, parts, strict=True):
        assert r.error is None
        alone = scorer.score(request_arrays(scorer, part))
        np.testing.assert_allclose(r.outputs["churn_probability"][:, 0], alone["churn_probability"], atol=1e-6)
        assert r.outputs["reason_codes"].tolist() == [[v.encode() for v in row] for row in alone["reason_codes"]]


def test_a_lone_request_gets_the_outputs_it_asked_for_as_a_batch_would(
    model: Any, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(3))
    (alone,) = model.execute([FakeRequest(arrays, ["churn_probability", "reason_codes"])])
    batched, _ = model.execute([FakeRequest(arrays, ["churn_probability", "reason_codes"]), FakeRequest(arrays)])
    assert alone.error is None and list(alone.outputs) == ["churn_probability", "reason_codes"]
    for name in alone.outputs:
        np.testing.assert_array_equal(alone.outputs[name], batched.outputs[name])


def test_a_lone_request_has_its_lists_cut_to_its_longest(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.serving.model import BackendModel

    class Lists:
        """Answers a list per row padded past the longest, as a scorer padding to a fixed width would."""

        def validate(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"n": np.asarray(columns["n"]).reshape(-1)}

        def score_rows(self, rows: dict[str, np.ndarray], **_: object) -> dict[str, np.ndarray]:
            n = rows["n"]
            items = np.array([[f"i{j}" if j < k else "" for j in range(4)] for k in n], dtype=object)
            return {"items": items}

    class Model(BackendModel):
        pb_utils = fake_pb_utils()

    m = Model()
    m.model_name, m.output_dims, m.scorer = "lists", {"items": [-1]}, Lists()
    m._lists, m.required, m._required = frozenset({"items"}), ["n"], frozenset({"n"})
    (alone,) = m.execute([FakeRequest({"n": np.array([[1], [2]])})])
    assert alone.outputs["items"].tolist() == [[b"i0", b""], [b"i0", b"i1"]]
    one, three = m.execute([FakeRequest({"n": np.array([[1]])}), FakeRequest({"n": np.array([[3]])})])
    assert one.outputs["items"].tolist() == [[b"i0"]] and three.outputs["items"].shape == (1, 3)
