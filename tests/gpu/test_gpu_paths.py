"""The same features and scores on CPU and GPU. Skipped without a CUDA device (FINSCORE_REQUIRE_GPU=1 fails)."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.backend import polars_engine, resolve_device
from engine.churn import ChurnScorer, TrainResult
from tests.conftest import request_arrays


def test_features_are_identical_on_each_backend(backend: str, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    device = resolve_device(backend)
    got = scorer.schema.features(customers, engine=polars_engine(device))
    want = scorer.schema.features(customers)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=0, atol=0)


def test_scores_agree_on_each_backend(backend: str, trained: TrainResult, customers: pl.DataFrame) -> None:
    scorer = ChurnScorer.load(trained.path, device=resolve_device(backend))
    cpu = ChurnScorer.load(trained.path, device="cpu")
    frame = customers.head(500)
    np.testing.assert_allclose(
        scorer.score(request_arrays(scorer, frame))["churn_probability"],
        cpu.score(request_arrays(cpu, frame))["churn_probability"],
        atol=1e-5,
    )
