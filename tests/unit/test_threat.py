from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
import torch

from engine.demo.tables import EVENT_LABEL, network_events
from engine.errors import DataFileError, InvalidInputError, ModelNotReadyError, SchemaError, UsageError
from engine.families.metrics import threshold_at_fpr
from engine.families.threat import ThreatScorer, train_threat
from engine.families.threat.network import Autoencoder, error_scale, export_onnx
from engine.families.threat.train import ThreatTrainResult, threat_config
from engine.serving.config import render_config
from engine.serving.repository import ModelRepository
from tests.conftest import request_arrays, with_holes


def test_threshold_alerts_on_at_most_the_target_share_of_normal_rows() -> None:
    rng = np.random.default_rng(0)
    for fpr in (0.001, 0.01, 0.05, 0.2):
        scores = np.round(rng.exponential(1.0, 5000), 2)  # ties on purpose
        cut = threshold_at_fpr(scores, fpr)
        alerted = np.mean(scores >= cut)
        assert alerted <= fpr
        below = scores[scores < cut]
        # The cut is as low as it can be: moving it to the next score down would exceed the target.
        if len(below):
            assert np.mean(scores >= below.max()) > fpr


def test_training_calibrates_the_threshold_and_separates_attacks(threat_trained: ThreatTrainResult) -> None:
    assert threat_trained.holdout_fpr <= 0.01
    assert threat_trained.metrics is not None
    # Attack rows were never trained on; synthetic attacks are far from normal traffic.
    assert threat_trained.metrics.roc_auc > 0.95
    assert threat_trained.metrics.detection_rate > 0.5
    assert "event_id" not in threat_trained.schema.names
    assert threat_trained.schema.id_column == "event_id"
    assert threat_trained.schema.label == EVENT_LABEL


def test_written_config_is_what_the_generator_renders(threat_trained: ThreatTrainResult) -> None:
    config = (threat_trained.path.parent / "config.pbtxt").read_text(encoding="utf-8")
    assert config == render_config(threat_config(threat_trained.schema, threshold=threat_trained.threshold))
    assert f'string_value: "{threat_trained.threshold!r}"' in config
    assert 'name: "is_threat" data_type: TYPE_BOOL' in config


def test_request_path_equals_frame_path(threat_scorer: ThreatScorer, events: pl.DataFrame) -> None:
    frame = events.head(300)
    served = threat_scorer.score(request_arrays(threat_scorer, frame))
    bulk = threat_scorer.score_frame(frame)
    np.testing.assert_allclose(served["anomaly_score"], bulk["anomaly_score"], rtol=1e-5)
    assert (served["top_features"] == bulk["top_features"]).all()
    assert (served["is_threat"] == (served["anomaly_score"] >= threat_scorer.threshold)).all()


def test_csv_text_scores_like_typed_numbers(threat_scorer: ThreatScorer, events: pl.DataFrame) -> None:
    frame = events.head(200)
    as_text = frame.with_columns(pl.all().cast(pl.String))
    np.testing.assert_allclose(
        threat_scorer.score_frame(as_text)["anomaly_score"],
        threat_scorer.score_frame(frame)["anomaly_score"],
        rtol=1e-5,
    )


def test_top_features_name_the_column_an_attack_changes(threat_scorer: ThreatScorer, events: pl.DataFrame) -> None:
    def top(kind: str) -> np.ndarray:
        return threat_scorer.score_frame(events.filter(pl.col(EVENT_LABEL) == kind))["top_features"]

    assert (top("exfiltration")[:, 0] == "bytes_out").mean() > 0.8
    assert (top("brute_force") == "failed_logins").any(axis=1).mean() > 0.8
    assert (top("syn_flood")[:, :2] == "connections_per_min").any(axis=1).mean() > 0.8
    assert set(top("normal").ravel()) <= set(threat_scorer.schema.names)


def test_missing_and_unseen_values_score_without_error(threat_scorer: ThreatScorer, events: pl.DataFrame) -> None:
    arrays = with_holes(threat_scorer, request_arrays(threat_scorer, events.head(4)))
    out = threat_scorer.score(arrays)
    assert np.isfinite(out["anomaly_score"]).all()
    # An unseen category is itself unusual: row 0 scores above the same row with its usual values.
    assert (
        out["anomaly_score"][0] > threat_scorer.score(request_arrays(threat_scorer, events.head(4)))["anomaly_score"][0]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("service"), "input 'service' is missing"),
        (lambda a: a.__setitem__("bytes_in", a["bytes_in"].astype(str)), "must be FP32 numbers"),
        (lambda a: a.__setitem__("protocol", np.zeros((3, 1), np.float32)), "must be BYTES"),
        (lambda a: a["hour"].__setitem__((1, 0), np.inf), "infinite value at row 1"),
        (lambda a: a.__setitem__("extra", a["hour"]), "unexpected input 'extra'"),
        (lambda a: a.__setitem__("hour", a["hour"][:2]), "has 2 rows but other inputs have 3"),
    ],
)
def test_bad_requests_name_the_input(threat_scorer: ThreatScorer, events: pl.DataFrame, change, message) -> None:
    arrays = request_arrays(threat_scorer, events.head(3))
    change(arrays)
    with pytest.raises(InvalidInputError, match=message):
        threat_scorer.score(arrays)


def test_exported_graph_equals_the_torch_network(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 7)).astype(np.float32)
    groups = np.zeros((7, 3), np.float32)
    groups[[0, 1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 1, 2, 2]] = 1
    torch.manual_seed(0)
    ae = Autoencoder(7).eval()
    scale = error_scale(ae, x)
    export_onnx(ae, groups, scale, tmp_path / "m.onnx")
    score, column_error = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"features": x[:5]})
    with torch.no_grad():
        err = ((torch.from_numpy(x[:5]) - ae(torch.from_numpy(x[:5]))) ** 2).numpy() / scale
    np.testing.assert_allclose(score, err.mean(axis=1), rtol=1e-4)
    np.testing.assert_allclose(column_error, err @ groups, rtol=1e-4)
    one = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"features": x[:1]})[0]
    np.testing.assert_allclose(one, score[:1], rtol=1e-5)


def test_unlabelled_contaminated_data_still_ranks_attacks_first(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    df = network_events(4000, seed=9, attack_share=0.03)
    result = train_threat(df.drop(EVENT_LABEL), repo=ModelRepository(tmp_path), threads=2)
    assert result.metrics is None
    scores = ThreatScorer.load(result.path).score_frame(df)["anomaly_score"]
    assert roc_auc_score(df.get_column(EVENT_LABEL) != "normal", scores) > 0.9


def test_training_errors_are_one_sentence(tmp_path: Path, events: pl.DataFrame) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(SchemaError, match="--normal 'benign' is not a value of label column 'label'"):
        train_threat(events, label="label", normal="benign", repo=repo)
    with pytest.raises(DataFileError, match="label column 'verdict' is not in the table"):
        train_threat(events, label="verdict", repo=repo)
    with pytest.raises(UsageError, match="false-positive rate must be between 0 and 0.5"):
        train_threat(events, fpr=0.7, repo=repo)
    with pytest.raises(UsageError, match="model name"):
        train_threat(events, name="../x", repo=repo)
    with pytest.raises(SchemaError, match="too few normal rows"):
        train_threat(events.head(50), label="label", repo=repo)
    assert repo.versions("threat") == []


def test_loading_an_untrained_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotReadyError, match="finscore train threat"):
        ThreatScorer.load(tmp_path)


def test_matrix_twin_scores_like_the_raw_model(threat_trained: ThreatTrainResult, events: pl.DataFrame) -> None:
    from engine.families.threat.matrix import ThreatMatrixScorer, features_from_parameters, matrix_config

    repo = ModelRepository(threat_trained.path.parent.parent)
    twin_dir = repo.latest("threat_features")
    assert twin_dir.name == threat_trained.path.name  # written together, same version number
    twin = ThreatMatrixScorer.load(twin_dir)
    raw = ThreatScorer.load(threat_trained.path)
    # A client rebuilds the features from the config's parameters alone.
    config = matrix_config(raw.features, name="threat", threshold=raw.threshold, max_batch_size=8)
    features = features_from_parameters(config.parameters)
    frame = events.head(400)
    x = features.matrix(frame)
    out = twin.score(twin.validate({"features": x}))
    expected = raw.score_frame(frame)
    np.testing.assert_allclose(out["anomaly_score"], expected["anomaly_score"], rtol=1e-6)
    assert (out["is_threat"] == expected["is_threat"]).all()
    names = np.asarray([*raw.schema.names, ""], dtype=object)[out["top_columns"]]
    flagged = expected["is_threat"]
    assert flagged.any()
    assert (names[flagged] == expected["top_features"][flagged]).all()
    assert (out["top_columns"][~flagged] == -1).all()


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({}, "takes one input, 'features'"),
        ({"x": np.zeros((2, 3), np.float32)}, "takes one input"),
        ({"features": np.zeros((2, 3), np.float32)}, "must be FP32 \\[batch, "),
        ({"features": np.zeros((2, 5))}, "got float64"),
    ],
)
def test_matrix_twin_rejects_what_is_not_its_matrix(threat_trained: ThreatTrainResult, columns, message) -> None:  # noqa: ANN001
    from engine.families.threat.matrix import ThreatMatrixScorer

    twin = ThreatMatrixScorer.load(ModelRepository(threat_trained.path.parent.parent).latest("threat_features"))
    with pytest.raises(InvalidInputError, match=message):
        twin.validate(columns)
    width = len(twin.features.names)
    x = np.zeros((3, width), np.float32)
    x[1, 0] = np.nan
    with pytest.raises(InvalidInputError, match="missing or infinite value at row 1"):
        twin.validate({"features": x})


def test_versions_carry_the_committed_shells(threat_trained: ThreatTrainResult) -> None:
    shells = Path(__file__).resolve().parents[2] / "model_repo"
    twin = ModelRepository(threat_trained.path.parent.parent).latest("threat_features")
    assert (threat_trained.path / "model.py").read_text() == (shells / "threat" / "model.py").read_text()
    assert (twin / "model.py").read_text() == (shells / "threat_features" / "model.py").read_text()
