"""Training propensity: the calibrated classifier churn trains (:func:`engine.families.tabular.fit_binary`) on a
table of customers and whether each took an offer, written as a version of its own model (``propensity``, or one
model per offer with ``name``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine.device import Device
from engine.families.churn.scorer import MODEL_FILE
from engine.families.contract import TrainResult, check_model_name, publish_version, table_config
from engine.families.metrics import BinaryMetrics
from engine.families.propensity.scorer import OUTPUTS, PARAMS_FILE
from engine.families.tabular import drop_columns, fit_binary
from engine.serving.config import ModelConfig
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table
from engine.tables.schema import TableSchema

__all__ = ["MODEL_NAME", "PropensityTrainResult", "propensity_config", "train_propensity"]

MODEL_NAME = "propensity"


@dataclass(frozen=True)
class PropensityTrainResult(TrainResult):
    metrics: BinaryMetrics
    schema: TableSchema
    rounds: int
    dropped: tuple[str, ...] = ()
    rows_without_label: int = 0


def propensity_config(
    schema: TableSchema, *, name: str = MODEL_NAME, instance_count: int = 1, device: Device = "cpu"
) -> ModelConfig:
    """The served config: one input per raw column the model uses; ``id_column`` for bulk scoring and clients."""
    return table_config(name, schema, OUTPUTS, device=device, instance_count=instance_count)


def train_propensity(
    data: str | os.PathLike[str],
    *,
    label: str,
    id_column: str | None = None,
    positive: str | None = None,
    drop: Sequence[str] = (),
    name: str = MODEL_NAME,
    repo: ModelRepository | None = None,
    seed: int = 42,
    device: Device = "cpu",
    instance_count: int = 1,
    threads: int | None = None,
) -> PropensityTrainResult:
    """Train a propensity model on ``data`` (CSV with ``,`` or ``;``, gzip or not, or Parquet) and write it as the
    next version of ``name`` in ``repo``. ``drop``: columns never to learn from, such as one known only after the
    contact (the bank-marketing table's call ``duration``)."""
    check_model_name(name)
    started = time.perf_counter()
    repo = repo or ModelRepository()
    df = drop_columns(read_table(data), drop, source=data)
    fit = fit_binary(
        df, label=label, source=data, id_column=id_column, positive=positive, seed=seed, device=device, threads=threads
    )
    writer = repo.new_version(name, shell_of=MODEL_NAME)
    fit.booster.save_model(writer.path / MODEL_FILE)
    fit.schema.save(writer.path / "schema.json")
    params = {**fit.params(seed), "label": label, "positive": fit.schema.positive, "dropped": list(drop)}
    (writer.path / PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")
    config = propensity_config(fit.schema, name=name, instance_count=instance_count, device=device)
    final = publish_version(writer, config, fit.metrics.as_dict(), reference=df.select(fit.schema.names))
    seconds = time.perf_counter() - started
    return PropensityTrainResult(
        writer.version, final, fit.metrics, seconds, fit.schema, fit.rounds, tuple(drop), fit.rows["without_label"]
    )
