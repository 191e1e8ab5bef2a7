"""kernels.forest: a model's margin from the flattened trees equals XGBoost's own, and the NumPy twin's."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from kernels.forest import Forest, forest_margin_ref
from tests.unit.test_treeshap import TYPES, booster, table


def xgboost_margin(b: xgb.Booster, x: np.ndarray) -> np.ndarray:
    return b.predict(xgb.DMatrix(x, feature_types=TYPES, enable_categorical=True), output_margin=True)


def forest_of(b: xgb.Booster) -> Forest | None:
    """The forest of ``b`` with XGBoost's base margin: its margin for a row of missing values, less the leaves
    that row reaches."""
    empty = np.full((1, 6), np.nan, np.float32)
    bare = Forest.from_model(b.save_raw("json"), n_features=6, base=0.0)
    if bare is None:
        return None
    return Forest.from_model(
        b.save_raw("json"), n_features=6, base=float(xgboost_margin(b, empty)[0] - bare.margin(empty)[0])
    )


@pytest.mark.parametrize(("depth", "seed"), [(1, 0), (3, 1), (6, 2), (8, 3)])
def test_margin_equals_xgboost(depth: int, seed: int) -> None:
    x, y = table(seed)
    b = booster(x, y, depth, seed)
    scored = x.copy()
    scored[:40, 4] = 40.0  # a category code no split knows
    scored[40:60, 4] = -1.0  # an invalid code
    scored[60:80, 5] = np.nan
    forest = forest_of(b)
    assert forest is not None and forest.categorical.any()
    np.testing.assert_allclose(forest.margin(scored), xgboost_margin(b, scored), atol=2e-5)
    p = b.predict(xgb.DMatrix(scored, feature_types=TYPES, enable_categorical=True))
    np.testing.assert_allclose(forest.probability(scored), p, atol=1e-6)


def test_kernel_and_numpy_twin_agree() -> None:
    x, y = table(4)
    forest = Forest.from_model(booster(x, y, 5, 4).save_raw("json"), n_features=6, base=-0.3)
    assert forest is not None
    np.testing.assert_allclose(forest.margin(x), forest_margin_ref(forest, x), atol=1e-9)
    assert np.ptp(forest.margin(x)) > 1.0  # the rows do reach different leaves


def test_grades_are_numpys_comparisons_of_the_fp32_probability() -> None:
    x, y = table(5)
    forest = Forest.from_model(booster(x, y, 4, 5).save_raw("json"), n_features=6, base=0.0)
    assert forest is not None
    prob = forest.probability(x)
    # Thresholds at the probabilities themselves (the edge, reached), between them, and where none reaches.
    for lower, upper in ((float(np.quantile(prob, 0.5)), float(np.quantile(prob, 0.9))), (0.2, 0.2), (2.0, 3.0)):
        got, grade = forest.graded(x, lower, upper)
        np.testing.assert_array_equal(got, prob)
        want = np.where(prob >= upper, 2, np.where(prob >= lower, 1, 0))
        np.testing.assert_array_equal(grade, want)
        assert grade.dtype == np.int32
    assert set(forest.graded(x, 0.3, 0.7)[1].tolist()) == {0, 1, 2}


def test_models_beyond_the_kernel_are_refused() -> None:
    x, y = table(5)
    dm = xgb.DMatrix(x, label=y, feature_types=TYPES, enable_categorical=True)
    forest = xgb.train({"num_parallel_tree": 3, "max_depth": 2, "subsample": 0.5, "colsample_bynode": 0.5}, dm, 2)
    assert Forest.from_model(forest.save_raw("json"), n_features=6, base=0.0) is None
    assert Forest.from_model(booster(x, y, 2, 5).save_raw("json"), n_features=3, base=0.0) is None  # too few
