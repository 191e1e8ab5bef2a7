"""Training churn: the shared calibrated classifier (:func:`engine.families.tabular.fit_binary`), then the
retention actions and the feature-tensor twin, written as a version."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine.device import Device
from engine.families.churn.actions import default_actions, read_actions, write_actions
from engine.families.churn.scorer import MODEL_FILE, OUTPUTS, PARAMS_FILE
from engine.families.churn.twin import churn_twin_config, write_churn_twin
from engine.families.contract import TrainResult, publish_version, table_config
from engine.families.metrics import BinaryMetrics
from engine.families.tabular import fit_binary
from engine.serving.config import ModelConfig
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table
from engine.tables.schema import TableSchema

__all__ = ["ChurnTrainResult", "churn_config", "train_churn"]

MODEL_NAME = "churn"


@dataclass(frozen=True)
class ChurnTrainResult(TrainResult):
    metrics: BinaryMetrics
    schema: TableSchema
    rounds: int
    rows_without_label: int = 0


def churn_config(schema: TableSchema, *, instance_count: int = 1, device: Device = "cpu") -> ModelConfig:
    """The served ``churn`` model's config: one input per raw column the model uses."""
    return table_config(MODEL_NAME, schema, OUTPUTS, device=device, instance_count=instance_count)


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
    fit = fit_binary(
        df, label=label, source=data, id_column=id_column, positive=positive, seed=seed, device=device, threads=threads
    )
    schema = fit.schema

    table = default_actions(schema.names)
    if actions is not None:
        table.update(read_actions(Path(actions)))

    writer = repo.new_version(MODEL_NAME)
    fit.booster.save_model(writer.path / MODEL_FILE)
    schema.save(writer.path / "schema.json")
    write_actions(table, writer.path / "actions.csv")
    (writer.path / PARAMS_FILE).write_text(json.dumps(fit.params(seed), indent=2), encoding="utf-8")
    config = churn_config(schema, instance_count=instance_count, device=device)
    final = publish_version(writer, config, fit.metrics.as_dict(), reference=df.select(schema.names))
    # The same version fed feature tensors (see engine.families.churn.twin): clients that can encode use it.
    write_churn_twin(
        repo,
        final,
        churn_twin_config(schema, read_actions(final / "actions.csv"), instance_count=instance_count, device=device),
    )
    seconds = time.perf_counter() - started
    return ChurnTrainResult(writer.version, final, fit.metrics, seconds, schema, fit.rounds, fit.rows["without_label"])
