"""The same features and scores on CPU and GPU. Skipped without a CUDA device (FINSCORE_REQUIRE_GPU=1 fails)."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.device import polars_engine, resolve_device
from engine.families.churn import ChurnScorer, ChurnTrainResult
from tests.conftest import request_arrays


def test_features_are_identical_on_each_backend(backend: str, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    device = resolve_device(backend)
    got = scorer.schema.features(customers, engine=polars_engine(device))
    want = scorer.schema.features(customers)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=0, atol=0)


def test_scores_agree_on_each_backend(backend: str, trained: ChurnTrainResult, customers: pl.DataFrame) -> None:
    scorer = ChurnScorer.load(trained.path, device=resolve_device(backend))
    cpu = ChurnScorer.load(trained.path, device="cpu")
    frame = customers.head(500)
    np.testing.assert_allclose(
        scorer.score(request_arrays(scorer, frame))["churn_probability"],
        cpu.score(request_arrays(cpu, frame))["churn_probability"],
        atol=1e-5,
    )


def test_threat_scores_agree_on_each_backend(backend: str, threat_trained, events: pl.DataFrame) -> None:  # noqa: ANN001
    from engine.families.threat import ThreatScorer

    gpu = ThreatScorer.load(threat_trained.path, device=resolve_device(backend))
    cpu = ThreatScorer.load(threat_trained.path, device="cpu")
    frame = events.head(2000)
    np.testing.assert_allclose(
        gpu.score_frame(frame)["anomaly_score"], cpu.score_frame(frame)["anomaly_score"], rtol=1e-4
    )
    assert (gpu.score(request_arrays(gpu, frame))["is_threat"] == cpu.score_frame(frame)["is_threat"]).mean() > 0.999


def test_auth_log_features_are_identical_on_each_backend(backend: str, tmp_path) -> None:  # noqa: ANN001
    from engine.demo.authlog import write_ssh_auth_log
    from engine.families.threat.authlog import read_auth_log

    write_ssh_auth_log(tmp_path / "auth.log", 5000, seed=2)
    gpu = read_auth_log(tmp_path / "auth.log", year=2024, device=resolve_device(backend)).features
    cpu = read_auth_log(tmp_path / "auth.log", year=2024).features
    assert gpu.equals(cpu)


def test_recommendations_agree_on_each_backend(backend: str, recommender_trained) -> None:  # noqa: ANN001
    """The recommender's scans through faiss on the GPU (engine.device.faiss_gpu_knn) give the CPU's lists."""
    from engine.families.recommender import RecommenderScorer

    gpu = RecommenderScorer.load(recommender_trained.path, device=resolve_device(backend))
    cpu = RecommenderScorer.load(recommender_trained.path, device="cpu")
    for customer in list(cpu.customer_index)[:50]:
        profile = cpu.profiles[cpu.customer_index[customer]] if cpu.profiles else {}
        got, scores, _ = gpu.recommend(customer, profile, 10)
        want, expected, _ = cpu.recommend(customer, profile, 10)
        assert got == want
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
