"""Training the threat model: schema → scaled features → autoencoder on normal rows → ONNX → a version.

Normal rows (all rows when no label is given) are split once: 20% are held out to calibrate the alert
threshold at the target false-positive rate and to report metrics; of the rest, 10% stop training early.
Attack rows are never trained on; with a label, they are scored with the held-out normal rows for ROC-AUC.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.device import Device, polars_engine, torch_device
from engine.errors import DataFileError, SchemaError, UsageError
from engine.families.contract import TrainResult, check_model_name, model_config, publish_version, schema_inputs
from engine.families.metrics import DetectionMetrics, detection_metrics, threshold_at_fpr
from engine.families.threat.features import ThreatFeatures
from engine.families.threat.matrix import matrix_config, write_matrix_version
from engine.families.threat.scorer import FEATURES_FILE, MODEL_FILE, OUTPUTS, PARAMS_FILE, ThreatScorer
from engine.serving.config import ModelConfig
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table
from engine.tables.schema import TableSchema, infer_schema

__all__ = ["MAX_BATCH", "ThreatTrainResult", "threat_config", "train_threat"]

MODEL_NAME = "threat"
MIN_ROWS = 100
#: Bulk scans send big requests: a larger batch than churn's keeps the transport cost per row low.
MAX_BATCH = 32768
#: Share of each mini-batch's worst rows left out of the loss when the "normal" rows are unlabelled.
TRIM_UNLABELLED = 0.05
TRIM_LABELLED = 0.01


@dataclass(frozen=True)
class ThreatTrainResult(TrainResult):
    metrics: DetectionMetrics | None
    schema: TableSchema
    threshold: float
    holdout_fpr: float
    epochs: int
    rows: dict[str, int]


def threat_config(
    schema: TableSchema,
    *,
    name: str = MODEL_NAME,
    threshold: float | None = None,
    instance_count: int = 1,
    device: Device = "cpu",
) -> ModelConfig:
    """The served threat model's config: one input per raw column the model uses; the alert threshold is a
    parameter so scans through the server can report it beside each alert."""
    parameters = {"id_column": schema.id_column or ""}
    if threshold is not None:
        parameters["threshold"] = repr(float(threshold))
    return model_config(
        name,
        schema_inputs(schema),
        OUTPUTS,
        max_batch_size=MAX_BATCH,
        device=device,
        instance_count=instance_count,
        parameters=parameters,
    )


def _normal_value(values: list[str], label: str, normal: str | None) -> str:
    if normal is not None:
        for v in values:
            if v.lower() == normal.strip().lower():
                return v
        shown = ", ".join(repr(v) for v in values[:6])
        msg = f"--normal {normal!r} is not a value of label column {label!r} (values: {shown})"
        raise SchemaError(msg)
    for v in values:
        if v.lower() in {"normal", "benign", "0", "false", "no"}:
            return v
    msg = f"cannot tell which value of label column {label!r} means normal; pass --normal VALUE"
    raise SchemaError(msg)


def _attack_labels(df: pl.DataFrame, label: str | None, normal: str | None) -> tuple[np.ndarray, str | None]:
    """1 for an attack row, 0 for a normal one, -1 without a label; and the normal value."""
    if label is None:
        return np.zeros(df.height, dtype=np.int8), None
    if label not in df.columns:
        msg = f"label column {label!r} is not in the table (columns: {', '.join(df.columns[:12])})"
        raise DataFileError(msg)
    raw = df.get_column(label).cast(pl.String).str.strip_chars()
    value = _normal_value(raw.drop_nulls().unique().sort().to_list(), label, normal)
    is_normal = (raw.str.to_lowercase() == value.lower()).fill_null(False).to_numpy()
    return np.where(raw.is_null().to_numpy(), -1, np.where(is_normal, 0, 1)).astype(np.int8), value


def _read(data: str | os.PathLike[str] | pl.DataFrame, entity: str, every: str) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """The table to learn from, and the columns that name what a row is about (never features)."""
    if isinstance(data, pl.DataFrame):
        return data, ()
    from engine.families.threat.authlog import is_auth_log, read_auth_log

    if is_auth_log(data):
        return read_auth_log(data, by=entity, every=every).features, (entity, "window_start")
    return read_table(data), ()


def train_threat(
    data: str | os.PathLike[str] | pl.DataFrame,
    *,
    label: str | None = None,
    normal: str | None = None,
    fpr: float = 0.01,
    id_column: str | None = None,
    entity: str = "source_ip",
    every: str = "10m",
    name: str = MODEL_NAME,
    repo: ModelRepository | None = None,
    seed: int = 42,
    device: Device = "cpu",
    instance_count: int = 1,
    threads: int | None = None,
) -> ThreatTrainResult:
    """Train a threat autoencoder on ``data`` and write it as the next version of ``name`` in ``repo``.

    ``data`` is a table (CSV, Parquet, a frame) or an OpenSSH auth log, learnt as windows of ``every`` per
    ``entity`` (``"source_ip"`` or ``"user"``).
    """
    started = time.perf_counter()
    if not 0.0 < fpr < 0.5:
        msg = f"the target false-positive rate must be between 0 and 0.5, got {fpr}"
        raise UsageError(msg)
    check_model_name(name)
    repo = repo or ModelRepository()
    threads = threads or os.cpu_count() or 1
    df, about = _read(data, entity, every)
    y, normal_value = _attack_labels(df, label, normal)
    schema = infer_schema(df.drop([c for c in (label, *about) if c]), id_column=id_column)
    excluded = {**dict.fromkeys(about, "entity of an auth-log window"), **schema.excluded}
    schema = TableSchema(schema.columns, label, normal_value, schema.id_column, excluded)

    rng = np.random.default_rng(seed)
    normal_idx = rng.permutation(np.flatnonzero(y == 0))
    if len(normal_idx) < MIN_ROWS:
        msg = f"too few normal rows to train on ({len(normal_idx)}); need {MIN_ROWS}+"
        raise SchemaError(msg)
    n_hold = max(20, int(0.2 * len(normal_idx)))
    hold_idx, fit_idx = normal_idx[:n_hold], normal_idx[n_hold:]
    n_val = max(10, int(0.1 * len(fit_idx)))
    val_idx, tr_idx = fit_idx[:n_val], fit_idx[n_val:]

    engine = polars_engine(device)
    features = ThreatFeatures.fit(schema, df[np.sort(tr_idx)], engine=engine)
    x = features.matrix(df, engine=engine)

    from engine.families.threat.network import error_scale, export_onnx, fit_autoencoder

    ae, history = fit_autoencoder(
        x[tr_idx],
        x[val_idx],
        seed=seed,
        trim=TRIM_LABELLED if label else TRIM_UNLABELLED,
        device=torch_device(device),
        threads=threads,
    )

    writer = repo.new_version(name, shell_of=MODEL_NAME)
    export_onnx(ae, features.groups(), error_scale(ae, x[val_idx]), writer.path / MODEL_FILE)
    # Score with the exported graph itself: the threshold belongs to what will be served.
    scorer = ThreatScorer(writer.path / MODEL_FILE, features, threshold=np.inf, device=device, threads=threads)
    score = scorer.score_matrix(x)["anomaly_score"]
    threshold = threshold_at_fpr(score[hold_idx], fpr)
    holdout_fpr = float(np.mean(score[hold_idx] >= threshold))
    metrics = None
    attack_idx = np.flatnonzero(y == 1)
    if label and len(attack_idx):
        eval_idx = np.concatenate([hold_idx, attack_idx])
        metrics = detection_metrics(y[eval_idx], score[eval_idx], threshold)

    rows = {
        "train": len(tr_idx),
        "validation": len(val_idx),
        "holdout_normal": len(hold_idx),
        "attacks": len(attack_idx),
        "without_label": int((y < 0).sum()),
    }
    schema.save(writer.path / "schema.json")
    features.save(writer.path / FEATURES_FILE)
    params = {
        "name": name,
        "threshold": threshold,
        "target_fpr": fpr,
        "holdout_fpr": holdout_fpr,
        "seed": seed,
        "epochs": history.epochs,
        "best_epoch": history.best_epoch,
        "validation_loss": history.validation_loss,
        "features": len(features.names),
        "rows": rows,
    }
    (writer.path / PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")
    # Unlabelled data has no attacks to score: the figures are then the threshold's on held-out normal rows.
    figures = {"threshold": threshold, "target_fpr": fpr, "holdout_fpr": holdout_fpr}
    config = threat_config(schema, name=name, threshold=threshold, instance_count=instance_count, device=device)
    final = publish_version(
        writer,
        config,
        {**(metrics.as_dict() if metrics else {}), **figures},
        reference=df.select(c for c in schema.names if c in df.columns),
    )
    # The same version fed feature matrices, for bulk scans through the server (see engine.families.threat.matrix).
    write_matrix_version(
        repo,
        final,
        matrix_config(
            features,
            name=name,
            threshold=threshold,
            max_batch_size=MAX_BATCH,
            device=device,
            instance_count=instance_count,
        ),
    )
    return ThreatTrainResult(
        version=writer.version,
        path=final,
        schema=schema,
        threshold=threshold,
        holdout_fpr=holdout_fpr,
        metrics=metrics,
        epochs=history.epochs,
        rows=rows,
        seconds=time.perf_counter() - started,
    )
