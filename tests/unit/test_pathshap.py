"""Path-dependent TreeSHAP over flattened trees (kernels.pathshap) against XGBoost's own pred_contribs."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from kernels.forest import Forest
from kernels.pathshap import leaf_tables, path_contributions, table_contributions


def _data(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    x = (rng.normal(size=(rows, cols)) * rng.choice([0.1, 1.0, 100.0], cols)).astype(np.float32)
    y = (x[:, 0] > 0) ^ (x[:, 1] * x[:, 2] > 0.5)
    x[rng.random(x.shape) < 0.08] = np.nan  # missing values take each split's default side
    return x, y.astype(np.float32)


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_contributions_are_xgboosts(depth: int) -> None:
    rng = np.random.default_rng(depth)
    x, y = _data(rng, 600, 6)
    params = {"max_depth": depth, "objective": "binary:logistic", "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), 20)
    forest = Forest.from_model(booster.save_raw("json"), n_features=6, base=0.0)
    assert forest is not None and forest.depth == depth
    theirs = booster.predict(xgb.DMatrix(x), pred_contribs=True)[:, :-1]
    ours = path_contributions(forest, x)
    assert np.abs(theirs).max() > 0.1  # contributions worth comparing
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    tables = leaf_tables(forest)  # the leaves' tables give the walk's numbers
    assert tables is not None
    np.testing.assert_allclose(table_contributions(forest, tables, x), ours, rtol=1e-9, atol=1e-12)
    # Together with XGBoost's bias column they add up to the margin, as TreeSHAP's do.
    bias = booster.predict(xgb.DMatrix(x), pred_contribs=True)[:, -1]
    np.testing.assert_allclose(ours.sum(axis=1) + bias, booster.predict(xgb.DMatrix(x), output_margin=True), atol=1e-4)


def test_categorical_splits() -> None:
    rng = np.random.default_rng(9)
    x, _ = _data(rng, 800, 3)
    x[:, 0] = rng.integers(0, 6, len(x))  # a category code
    y = np.isin(x[:, 0], [1, 4]).astype(np.float32)
    dm = xgb.DMatrix(x, label=y, feature_types=["c", "q", "q"], enable_categorical=True)
    booster = xgb.train({"max_depth": 3, "max_cat_to_onehot": 1, "nthread": 1}, dm, 10)
    forest = Forest.from_model(booster.save_raw("json"), n_features=3, base=0.0)
    assert forest is not None and forest.categorical.any()
    theirs = booster.predict(dm, pred_contribs=True)[:, :-1]
    np.testing.assert_allclose(path_contributions(forest, x), theirs, atol=2e-5)
    tables = leaf_tables(forest)
    assert tables is not None
    np.testing.assert_allclose(table_contributions(forest, tables, x), theirs, atol=2e-5)


def test_a_feature_split_twice_on_a_path_and_trees_too_deep_for_tables() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 2)).astype(np.float32)
    y = ((x[:, 0] > 0.5) | (x[:, 0] < -0.5)).astype(np.float32)  # one feature split twice on most paths
    booster = xgb.train({"max_depth": 4, "nthread": 1}, xgb.DMatrix(x, label=y), 8)
    forest = Forest.from_model(booster.save_raw("json"), n_features=2, base=0.0)
    assert forest is not None
    tables = leaf_tables(forest)
    assert tables is not None
    counts = np.diff(tables.feat_off)  # a leaf's features, each once, however often its path splits on them
    assert (np.diff(tables.path_off) > counts).any()
    theirs = booster.predict(xgb.DMatrix(x), pred_contribs=True)[:, :-1]
    np.testing.assert_allclose(table_contributions(forest, tables, x), theirs, atol=2e-5)
    deep = xgb.train({"max_depth": 8, "nthread": 1}, xgb.DMatrix(x, label=y * x[:, 1]), 3)
    deep_forest = Forest.from_model(deep.save_raw("json"), n_features=2, base=0.0)
    assert deep_forest is not None and deep_forest.depth > 6
    assert leaf_tables(deep_forest) is None  # the walk serves them
