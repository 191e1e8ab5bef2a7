from __future__ import annotations

import pytest

from engine.device import polars_engine, resolve_device
from engine.errors import UnsupportedOnGPU, UsageError


def test_gpu_request_without_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import device as b

    monkeypatch.setattr(b, "gpu_available", lambda: False)
    with pytest.raises(UnsupportedOnGPU, match="no CUDA device"):
        resolve_device("gpu")
    assert resolve_device("auto") == "cpu"
    monkeypatch.setenv("FINSCORE_REQUIRE_GPU", "1")
    with pytest.raises(UnsupportedOnGPU):
        resolve_device("auto")


def test_cpu_engine_and_bad_choice() -> None:
    assert polars_engine("cpu") == "cpu"
    assert resolve_device("KIND_CPU") == "cpu"
    with pytest.raises(UsageError, match="'auto', 'cpu' or 'gpu'"):
        resolve_device("tpu")
