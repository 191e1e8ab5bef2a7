"""A calibrated binary classifier on a customer table: the trainer the churn and propensity families share.

Rows are split once, stratified: 20% held out for the metrics printed, and 20% of the rest for early stopping,
Platt calibration and the choice of threshold (so the held-out figures are honest).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from engine.device import Device, polars_engine, xgboost_device
from engine.errors import SchemaError
from engine.families.churn.scorer import Calibration
from engine.families.metrics import BinaryMetrics, best_f1_threshold, binary_metrics
from engine.tables.schema import TableSchema, infer_schema

__all__ = ["MIN_ROWS", "XGB_PARAMS", "BinaryFit", "drop_columns", "fit_binary"]

MIN_ROWS = 50

# Shallow trees and a small step, stopped early on validation log-loss: the settings that held up
# across splits of the public churn tables (deeper trees overfit these few thousand rows).
XGB_PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 3,
    "eta": 0.05,
    "min_child_weight": 5,
    "subsample": 0.8,
    "colsample_bytree": 0.7,
    "reg_lambda": 5.0,
    "max_cat_to_onehot": 8,
}
MAX_ROUNDS = 3000
EARLY_STOPPING = 200


@dataclass(frozen=True)
class BinaryFit:
    """What :func:`fit_binary` learnt: the trees early stopping kept, their calibration and threshold, the
    held-out metrics, and how many rows went where."""

    booster: xgb.Booster
    schema: TableSchema
    calibration: Calibration
    threshold: float
    metrics: BinaryMetrics
    rounds: int
    rows: dict[str, int]

    def params(self, seed: int) -> dict[str, object]:
        """What the version's parameters file records (read back by the scorer)."""
        return {
            "calibration": {"a": self.calibration.a, "b": self.calibration.b},
            "threshold": self.threshold,
            "rounds": self.rounds,
            "seed": seed,
            "xgboost": XGB_PARAMS,
            "rows": self.rows,
        }


def drop_columns(df: pl.DataFrame, drop: Sequence[str], *, source: object) -> pl.DataFrame:
    """``df`` without ``drop``; a name that is not a column is one sentence (a typo must not train on it)."""
    missing = [c for c in drop if c not in df.columns]
    if missing:
        msg = f"{source}: --drop names no column {', '.join(repr(c) for c in missing)}"
        raise SchemaError(msg)
    return df.drop(list(drop))


def _fit_calibration(margin: np.ndarray, y: np.ndarray) -> Calibration:
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(margin.reshape(-1, 1).astype(np.float64), y)
    return Calibration(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def fit_binary(
    df: pl.DataFrame,
    *,
    label: str,
    source: object,
    id_column: str | None = None,
    positive: str | None = None,
    seed: int = 42,
    device: Device = "cpu",
    threads: int | None = None,
) -> BinaryFit:
    """Infer ``df``'s schema, then train, calibrate and measure gradient-boosted trees predicting ``label``."""
    schema = infer_schema(df, label=label, id_column=id_column, positive=positive)
    y_all = schema.labels(df)
    keep = y_all >= 0
    x_all = schema.features(df, engine=polars_engine(device))
    x, y = x_all[keep], y_all[keep].astype(np.int32)
    if len(y) < MIN_ROWS or min(np.bincount(y, minlength=2)) < 5:
        msg = f"{source}: too few labelled rows to train ({len(y)} rows, {int(y.sum())} positive); need {MIN_ROWS}+"
        raise SchemaError(msg)

    idx = np.arange(len(y))
    fit_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=y, random_state=seed)
    tr_idx, val_idx = train_test_split(fit_idx, test_size=0.2, stratify=y[fit_idx], random_state=seed)

    types = [c.xgb_type for c in schema.columns]

    def dmatrix(rows: np.ndarray, with_label: bool = True) -> xgb.DMatrix:
        return xgb.DMatrix(
            x[rows],
            label=y[rows] if with_label else None,
            feature_names=schema.names,
            feature_types=types,
            enable_categorical=True,
        )

    params = {**XGB_PARAMS, "seed": seed, "device": xgboost_device(device), "nthread": threads or os.cpu_count() or 1}
    dval = dmatrix(val_idx)
    booster = xgb.train(
        params,
        dmatrix(tr_idx),
        num_boost_round=MAX_ROUNDS,
        evals=[(dval, "validation")],
        early_stopping_rounds=EARLY_STOPPING,
        verbose_eval=False,
    )
    rounds = booster.best_iteration + 1
    booster = booster[:rounds]  # keep exactly the trees early stopping chose

    calibration = _fit_calibration(booster.predict(dval, output_margin=True), y[val_idx])
    threshold = best_f1_threshold(y[val_idx], calibration(booster.predict(dval, output_margin=True)))
    p_test = calibration(booster.predict(dmatrix(test_idx, False), output_margin=True))
    rows = {"train": len(tr_idx), "validation": len(val_idx), "test": len(test_idx)}
    rows["without_label"] = int((~keep).sum())
    return BinaryFit(
        booster, schema, calibration, threshold, binary_metrics(y[test_idx], p_test, threshold), rounds, rows
    )
