from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xgboost as xgb

from engine.errors import DataFileError, InvalidInputError, ModelNotReadyError, SchemaError
from engine.families.churn import ChurnScorer, ChurnTrainResult, churn_config, train_churn
from engine.families.churn.actions import NO_ACTION, default_actions, read_actions
from engine.serving.config import render_config
from engine.serving.repository import ModelRepository
from tests.conftest import request_arrays, with_holes


def test_training_writes_a_complete_version(trained: ChurnTrainResult) -> None:
    files = {p.name for p in trained.path.iterdir()}
    assert {"model.py", "model.ubj", "schema.json", "churn.json", "metrics.json", "actions.csv"} <= files
    saved = json.loads((trained.path / "metrics.json").read_text())
    assert saved["roc_auc"] == pytest.approx(trained.metrics.roc_auc)
    # The demo data carries a real signal: a model that learned nothing would sit near 0.5.
    assert trained.metrics.roc_auc > 0.7
    assert 0 < trained.metrics.threshold < 1


def test_config_written_equals_generator(trained: ChurnTrainResult) -> None:
    written = (trained.path.parent / "config.pbtxt").read_text()
    assert written == render_config(churn_config(trained.schema))
    assert "max_batch_size: 4096" in written and "dynamic_batching" in written
    for col in trained.schema.columns:
        kind = "TYPE_FP32" if col.wire == "FP32" else "TYPE_STRING"
        assert f'{{ name: "{col.name}" data_type: {kind} dims: [ 1 ] }}' in written


def test_next_training_adds_a_version(tmp_path: Path, customers_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    first = train_churn(customers_path, label="churned", repo=repo, threads=2)
    second = train_churn(customers_path, label="churned", repo=repo, threads=2)
    assert (first.version, second.version) == (1, 2)
    assert repo.latest("churn") == second.path
    assert not [p for p in (tmp_path / "churn").iterdir() if p.name.startswith(".")]


def test_scores_match_booster_and_are_calibrated(scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    frame = customers.head(300)
    out = scorer.score(request_arrays(scorer, frame))
    p = out["churn_probability"]
    assert p.dtype == np.float32 and p.shape == (300,)
    assert ((p > 0) & (p < 1)).all()
    x = scorer.schema.features(frame)
    dm = xgb.DMatrix(
        x,
        feature_names=scorer.schema.names,
        feature_types=[c.xgb_type for c in scorer.schema.columns],
        enable_categorical=True,
    )
    margin = scorer.booster.predict(dm, output_margin=True)
    np.testing.assert_allclose(p, scorer.calibration(margin), atol=1e-5)


def test_reason_codes_are_the_top_positive_contributions(scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    frame = customers.head(50)
    out = scorer.score(request_arrays(scorer, frame))
    x = scorer.schema.features(frame)
    dm = xgb.DMatrix(
        x,
        feature_names=scorer.schema.names,
        feature_types=[c.xgb_type for c in scorer.schema.columns],
        enable_categorical=True,
    )
    contribs = scorer.booster.predict(dm, pred_contribs=True)[:, :-1]
    names = scorer.schema.names
    for row, reasons in enumerate(out["reason_codes"]):
        positive = sorted(((v, names[j]) for j, v in enumerate(contribs[row]) if v > 0), reverse=True)[:3]
        assert [r for r in reasons if r] == [n for _, n in positive]


def test_actions_follow_threshold_and_table(scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    out = scorer.score(request_arrays(scorer, customers.head(500)))
    for p, reasons, action in zip(out["churn_probability"], out["reason_codes"], out["retention_action"], strict=True):
        if p < scorer.threshold or not reasons[0]:
            assert action == NO_ACTION
        else:
            assert action == scorer.actions[reasons[0]]
    assert any(a != NO_ACTION for a in out["retention_action"])


def test_missing_values_and_unseen_categories_are_scored(scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    out = scorer.score(with_holes(scorer, request_arrays(scorer, customers.head(2))))
    assert np.isfinite(out["churn_probability"]).all()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a, num, txt: a.pop(num), "is missing"),
        (lambda a, num, txt: a.__setitem__("extra", a[num]), "unexpected input 'extra'"),
        (
            lambda a, num, txt: a.__setitem__(num, np.array([[np.inf], [1.0]], dtype=np.float32)),
            "infinite value at row 0",
        ),
        (lambda a, num, txt: a.__setitem__(txt, np.array([[b"\xff\xfe"], [b"ok"]], dtype=object)), "not valid UTF-8"),
        (lambda a, num, txt: a.__setitem__(num, np.array([["7"], ["8"]], dtype=object)), "must be FP32"),
        (lambda a, num, txt: a.__setitem__(txt, np.array([[1.0], [2.0]], dtype=np.float32)), "must be BYTES"),
        (lambda a, num, txt: a.__setitem__(num, np.zeros((3, 1), dtype=np.float32)), "rows but other inputs have"),
        (lambda a, num, txt: a.__setitem__(num, np.zeros((2, 2), dtype=np.float32)), "shape"),
    ],
)
def test_bad_requests_are_one_clear_sentence(
    scorer: ChurnScorer, customers: pl.DataFrame, mutate, message: str
) -> None:  # type: ignore[no-untyped-def]
    arrays = request_arrays(scorer, customers.head(2))
    num = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    txt = next(c.name for c in scorer.schema.columns if c.wire == "BYTES")
    mutate(arrays, num, txt)
    with pytest.raises(InvalidInputError, match=message):
        scorer.score(arrays)


def test_edited_actions_table_is_used(trained: ChurnTrainResult, tmp_path: Path) -> None:
    table = read_actions(trained.path / "actions.csv")
    assert set(table) == set(trained.schema.names)
    assert default_actions(["Contract"])["Contract"].startswith("offer")
    with pytest.raises(DataFileError, match="'reason' and 'action'"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        read_actions(bad)


def test_training_refuses_what_it_cannot_learn(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0] * 5, "y": ["Yes", "No"] * 10}).write_csv(path)
    with pytest.raises(SchemaError, match="too few labelled rows"):
        train_churn(path, label="y", repo=ModelRepository(tmp_path / "repo"))
    with pytest.raises(DataFileError, match="no such file"):
        train_churn(tmp_path / "absent.csv", label="y", repo=ModelRepository(tmp_path / "repo"))


def test_loading_an_untrained_version_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelNotReadyError, match="finscore train churn"):
        ChurnScorer.load(tmp_path)
    with pytest.raises(ModelNotReadyError, match="no trained version"):
        ModelRepository(tmp_path).latest("churn")
