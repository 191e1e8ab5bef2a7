"""Training churn: schema → features → XGBoost with early stopping → calibration → threshold → a version.

Rows are split once, stratified: 20% held out for the metrics printed, and 20% of the rest for early
stopping, Platt calibration and the choice of threshold (so the held-out figures are honest).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from engine.device import Device, polars_engine, xgboost_device
from engine.errors import SchemaError
from engine.families.churn.actions import default_actions, read_actions, write_actions
from engine.families.churn.scorer import MODEL_FILE, OUTPUTS, PARAMS_FILE, Calibration
from engine.families.churn.twin import churn_twin_config, write_churn_twin
from engine.families.contract import TrainResult, model_config, publish_version, schema_inputs
from engine.families.metrics import BinaryMetrics, best_f1_threshold, binary_metrics
from engine.serving.config import ModelConfig
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table
from engine.tables.schema import TableSchema, infer_schema

__all__ = ["ChurnTrainResult", "churn_config", "train_churn"]

MODEL_NAME = "churn"
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
class ChurnTrainResult(TrainResult):
    metrics: BinaryMetrics
    schema: TableSchema
    rounds: int
    rows_without_label: int = 0


def churn_config(schema: TableSchema, *, instance_count: int = 1, device: Device = "cpu") -> ModelConfig:
    """The served ``churn`` model's config: one input per raw column the model uses."""
    return model_config(
        MODEL_NAME,
        schema_inputs(schema),
        OUTPUTS,
        device=device,
        instance_count=instance_count,
        # Read by bulk scoring and clients: which column identifies a row in outputs.
        parameters={"id_column": schema.id_column or ""},
    )


def _fit_calibration(margin: np.ndarray, y: np.ndarray) -> Calibration:
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(margin.reshape(-1, 1).astype(np.float64), y)
    return Calibration(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def train_churn(
    data: str | os.PathLike[str],
    *,
    label: str,
    id_column: str | None = None,
    positive: str | None = None,
    repo: ModelRepository | None = None,
    actions: str | os.PathLike[str] | None = None,
    seed: int = 42,
    device: Device = "cpu",
    instance_count: int = 1,
    threads: int | None = None,
) -> ChurnTrainResult:
    """Train a churn model on ``data`` and write it as the next version in ``repo``."""
    started = time.perf_counter()
    repo = repo or ModelRepository()
    df = read_table(data)
    schema = infer_schema(df, label=label, id_column=id_column, positive=positive)
    y_all = schema.labels(df)
    keep = y_all >= 0
    x_all = schema.features(df, engine=polars_engine(device))
    x, y = x_all[keep], y_all[keep].astype(np.int32)
    if len(y) < MIN_ROWS or min(np.bincount(y, minlength=2)) < 5:
        msg = f"{data}: too few labelled rows to train ({len(y)} rows, {int(y.sum())} positive); need {MIN_ROWS}+"
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
    metrics = binary_metrics(y[test_idx], p_test, threshold)

    table = default_actions(schema.names)
    if actions is not None:
        table.update(read_actions(Path(actions)))

    writer = repo.new_version(MODEL_NAME)
    booster.save_model(writer.path / MODEL_FILE)
    schema.save(writer.path / "schema.json")
    write_actions(table, writer.path / "actions.csv")
    params_out = {
        "calibration": {"a": calibration.a, "b": calibration.b},
        "threshold": threshold,
        "rounds": rounds,
        "seed": seed,
        "xgboost": XGB_PARAMS,
        "rows": {
            "train": len(tr_idx),
            "validation": len(val_idx),
            "test": len(test_idx),
            "without_label": int((~keep).sum()),
        },
    }
    (writer.path / PARAMS_FILE).write_text(json.dumps(params_out, indent=2), encoding="utf-8")
    config = churn_config(schema, instance_count=instance_count, device=device)
    final = publish_version(writer, config, metrics.as_dict(), reference=df.select(schema.names))
    # The same version fed feature tensors (see engine.families.churn.twin): clients that can encode use it.
    write_churn_twin(
        repo,
        final,
        churn_twin_config(schema, read_actions(final / "actions.csv"), instance_count=instance_count, device=device),
    )
    seconds = time.perf_counter() - started
    return ChurnTrainResult(writer.version, final, metrics, seconds, schema, rounds, int((~keep).sum()))
