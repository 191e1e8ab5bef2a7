"""kernels.treeshap: table look-up TreeSHAP against XGBoost's own pred_contribs, and the NumPy twin."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from engine.families.churn import ChurnScorer
from kernels.treeshap import (
    MAX_SPLITS,
    ShallowTreeShap,
    pattern_contributions_ref,
    tree_contributions,
)

TYPES = ["q", "q", "q", "q", "c", "c"]


def table(seed: int, rows: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Numbers with NaN holes, a 12-value category (partition splits) and a 3-value one (one-hot splits)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    x[:, 4] = rng.integers(0, 12, rows)
    x[:, 5] = rng.integers(0, 3, rows)
    x[rng.random(x.shape) < 0.1] = np.nan
    code = np.nan_to_num(x[:, 4], nan=0) % 3 == 1
    y = (np.nan_to_num(x[:, 0]) > 0) ^ code | (np.nan_to_num(x[:, 1] * x[:, 2]) > 0.5)
    return x, y.astype(np.int32)


def booster(x: np.ndarray, y: np.ndarray, depth: int, seed: int) -> xgb.Booster:
    params = {
        "max_depth": depth,
        "eta": 0.1,
        "objective": "binary:logistic",
        "max_cat_to_onehot": 4,
        "base_score": 0.3,
        "seed": seed,
        "nthread": 1,
    }
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_types=TYPES, enable_categorical=True), 40)


def xgboost_contribs(b: xgb.Booster, x: np.ndarray) -> np.ndarray:
    return b.predict(xgb.DMatrix(x, feature_types=TYPES, enable_categorical=True), pred_contribs=True)


@pytest.mark.parametrize(("depth", "seed"), [(1, 0), (2, 1), (3, 2), (3, 3)])
def test_contributions_equal_xgboost_treeshap(depth: int, seed: int) -> None:
    x, y = table(seed)
    b = booster(x, y, depth, seed)
    scored = x.copy()
    scored[:40, 4] = 40.0  # a category code no split knows
    scored[40:60, 4] = -1.0  # an invalid code
    scored[60:80, 5] = np.nan
    expected = xgboost_contribs(b, scored)
    shap = ShallowTreeShap.from_model(b.save_raw("json"), n_features=6, bias=float(expected[0, -1]))
    assert shap is not None
    assert shap.categorical.any() and (shap.splits > 1).any() == (depth > 1)
    np.testing.assert_allclose(shap.contributions(scored), expected, atol=5e-6)


def test_kernel_and_numpy_twin_agree() -> None:
    x, y = table(4)
    b = booster(x, y, 3, 4)
    shap = ShallowTreeShap.from_model(b.save_raw("json"), n_features=6, bias=0.0)
    assert shap is not None
    patterns = shap.patterns(x)
    assert patterns.max() > 0 and patterns.max() < 1 << int(shap.splits.max())
    twin = pattern_contributions_ref(patterns, shap.offset, shap.slots, shap.slot_feature, shap.table, 6)
    # The fused pass (decisions, patterns and look-ups in one kernel) sums the same table rows.
    arrays = (shap.splits, shap.condition, shap.offset, shap.slots, shap.slot_feature, shap.table)
    fused = tree_contributions(x, *shap._conditions(), *arrays, 0.25)
    assert fused.dtype == np.float32 and (fused[:, -1] == 0.25).all()
    np.testing.assert_allclose(fused[:, :-1], twin[:, :-1], atol=1e-6)


def test_repeated_conditions_are_decided_once() -> None:
    x, y = table(7)
    x[:, :4] = np.round(x[:, :4], 1)  # few distinct thresholds: forty trees ask the same questions again
    b = booster(x, y, 3, 7)
    shap = ShallowTreeShap.from_model(b.save_raw("json"), n_features=6, bias=0.0)
    assert shap is not None
    assert len(shap.feature) < int(shap.splits.sum())
    numeric = ~shap.categorical
    keys = list(zip(shap.feature[numeric], shap.threshold[numeric], shap.nan_right[numeric], strict=True))
    assert len(set(keys)) == len(keys)
    used = np.concatenate([shap.condition[t, : shap.splits[t]] for t in range(len(shap.splits))])
    assert set(used.tolist()) == set(range(len(shap.feature)))  # every condition is some split's
    expected = xgboost_contribs(b, x)
    shap = ShallowTreeShap.from_model(b.save_raw("json"), n_features=6, bias=float(expected[0, -1]))
    assert shap is not None
    np.testing.assert_allclose(shap.contributions(x), expected, atol=5e-6)


def test_trees_beyond_the_tables_are_left_to_xgboost() -> None:
    x, y = table(5)
    deep = booster(x, y, 6, 5)
    assert max(int(t.count("[")) for t in deep.get_dump()) > MAX_SPLITS  # the fixture really is deep
    assert ShallowTreeShap.from_model(deep.save_raw("json"), n_features=6, bias=0.0) is None


def test_churn_scorer_reasons_come_from_the_tables_and_equal_xgboost(scorer: ChurnScorer) -> None:
    assert scorer._shap is not None
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, len(scorer.schema.names))).astype(np.float32) * 50
    for j, col in enumerate(scorer.schema.columns):
        if col.xgb_type == "c":
            x[:, j] = rng.integers(-1, len(col.vocabulary) + 2, len(x))
    x[rng.random(x.shape) < 0.15] = np.nan
    dm = xgb.DMatrix(x, feature_types=[c.xgb_type for c in scorer.schema.columns], enable_categorical=True)
    expected = scorer.booster.predict(dm, pred_contribs=True, validate_features=False)
    np.testing.assert_allclose(scorer.contributions(x), expected, atol=5e-6)


def test_the_one_call_score_equals_contributions_then_reason_scores(scorer: ChurnScorer) -> None:
    from kernels.ranking import reason_scores

    shap = scorer._shap
    assert shap is not None
    rng = np.random.default_rng(8)
    x = rng.normal(size=(200, len(scorer.schema.names))).astype(np.float32) * 50
    x[rng.random(x.shape) < 0.1] = np.nan
    action_of = np.arange(len(scorer.schema.names) + 1, dtype=np.int32)
    got = shap.reason_scores(x, a=0.9, b=-0.2, threshold=0.3, k=3, action_of=action_of)
    want = reason_scores(shap.contributions(x), 0.9, -0.2, 0.3, 3, action_of)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert (got[2] > 0).any() and (got[1] >= 0).any()  # the fixture's rows do act and do have reasons
