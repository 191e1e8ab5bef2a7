"""The floor model's repository: the model's own config under the floor's name, and the no-op model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.floor import floor_repository
from engine.errors import ModelNotReadyError
from tests.unit.test_serving import FakeRequest, fake_pb_utils

FLOOR_MODEL = Path(__file__).resolve().parents[2] / "bench" / "floor_model.py"
CONFIG = """name: "churn"
backend: "python"
max_batch_size: 4096
version_policy: { all { } }
input [
  { name: "age" data_type: TYPE_FP32 dims: [ 1 ] }
]
output [
  { name: "churn_probability" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "reason_codes" data_type: TYPE_STRING dims: [ 3 ] }
]
dynamic_batching { max_queue_delay_microseconds: 0 }
"""


def test_the_floor_takes_the_models_config_under_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "repo" / "churn").mkdir(parents=True)
    (tmp_path / "repo" / "churn" / "config.pbtxt").write_text(CONFIG, encoding="utf-8")
    name = floor_repository(tmp_path / "repo", "churn", tmp_path / "floor")
    assert name == "churn_floor"
    config = (tmp_path / "floor" / name / "config.pbtxt").read_text(encoding="utf-8")
    assert config.startswith('name: "churn_floor"')
    assert "version_policy" not in config  # the floor has one version
    assert config.replace('name: "churn_floor"', 'name: "churn"') == CONFIG.replace("version_policy: { all { } }", "")
    model = (tmp_path / "floor" / name / "1" / "model.py").read_text(encoding="utf-8")
    assert "class TritonPythonModel" in model and "import engine" not in model
    assert (tmp_path / "repo" / "churn" / "config.pbtxt").read_text(encoding="utf-8") == CONFIG  # untouched


def test_a_model_without_a_config_has_no_floor(tmp_path: Path) -> None:
    with pytest.raises(ModelNotReadyError, match="no config to build the floor of model 'churn'"):
        floor_repository(tmp_path, "churn", tmp_path / "floor")


def test_each_level_beside_the_floor_is_the_median_of_its_rounds() -> None:
    from bench.cli import floor_lines

    def run(target: str, level: int, k: int, p50: float, throughput: float) -> dict:
        return {"target": target, "level": level, "config": f"round {k}", "p50_ms": p50, "throughput": throughput}

    closed = [
        run("floor", 1, 1, 0.40, 2000), run("triton", 1, 1, 0.50, 1600),
        run("triton", 1, 2, 0.90, 1000), run("floor", 1, 2, 0.45, 1800),  # a slow window, on both sides
        run("floor", 1, 3, 0.40, 2000), run("triton", 1, 3, 0.48, 1700),
        {"target": "triton", "level": 1, "config": "default", "p50_ms": 9.0, "throughput": 10},  # not a round
        run("floor", 16, 1, 3.0, 4000), run("triton", 16, 1, 3.3, 3600),
        run("triton", 16, 2, 3.0, 0),  # nothing answered: no pair
    ]  # fmt: skip
    lines = floor_lines(closed)
    assert len(lines) == 2
    assert lines[0].startswith("c=1: beside the floor in 3 rounds, the model's p50 is 1.25x 2.00x 1.20x the floor's")
    assert "(median 1.25x; p50 0.50 vs 0.40 ms)" in lines[0] and "80% 56% 85% of the floor's (median 80%)" in lines[0]
    assert lines[1].startswith("c=16: beside the floor in 1 rounds") and "(median 90%)" in lines[1]


def test_the_floor_answers_the_outputs_a_request_asks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("floor_model_py", FLOOR_MODEL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    floor = module.TritonPythonModel()
    outputs = [
        {"name": "churn_probability", "data_type": "TYPE_FP32", "dims": ["1"]},
        {"name": "reason_codes", "data_type": "TYPE_STRING", "dims": ["3"]},
    ]
    floor.initialize({"model_config": json.dumps({"max_batch_size": 4096, "output": outputs})})
    rows = {"age": np.zeros((2, 1), dtype=np.float32)}
    asked, every = floor.execute([FakeRequest(rows, ["reason_codes"]), FakeRequest(rows)])
    assert list(asked.outputs) == ["reason_codes"] and asked.outputs["reason_codes"].shape == (2, 3)
    assert list(every.outputs) == ["churn_probability", "reason_codes"]
