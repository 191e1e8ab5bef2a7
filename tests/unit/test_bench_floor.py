"""The floor model's repository: the model's own config under the floor's name, and the no-op model."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.floor import floor_repository
from engine.errors import ModelNotReadyError

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
