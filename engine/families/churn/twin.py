"""The churn model fed one feature tensor per request: ``churn_features`` (see :mod:`engine.families.twin`).

A client computes the features with the schema the config publishes and sends them as one FP32 ``features``
matrix; the model answers the probability, the reason codes as column indices and the retention action as
an index into the config's list. Its scores and reasons are the raw ``churn`` model's, value for value:
both run :meth:`ChurnScorer.score_matrix` on the same features.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.device import Device
from engine.families.churn.scorer import MODEL_FILE, PARAMS_FILE, ChurnScorer, action_names
from engine.families.contract import METRICS_FILE, N_REASONS, model_config
from engine.families.twin import FeatureCheck, twin_input, twin_name, twin_parameters, write_twin
from engine.serving.config import ModelConfig, TensorSpec
from engine.serving.repository import ModelRepository
from engine.tables.schema import TableSchema

__all__ = ["TWIN_OUTPUTS", "ChurnTwinScorer", "churn_twin_config", "write_churn_twin"]

RAW = "churn"
TWIN_OUTPUTS = (
    TensorSpec("churn_probability", "FP32", (1,)),
    TensorSpec("reason_codes", "INT32", (N_REASONS,)),
    TensorSpec("retention_action", "INT32", (1,)),
)
ARTIFACTS = (MODEL_FILE, PARAMS_FILE, "schema.json", "actions.csv", METRICS_FILE)


def churn_twin_config(
    schema: TableSchema, actions: Mapping[str, str], *, instance_count: int = 1, device: Device = "cpu"
) -> ModelConfig:
    """The config of ``churn_features``: one FP32 input of the schema's width; what a client needs to encode
    and decode is in its parameters."""
    parameters = twin_parameters(
        encoding="table",
        schema=schema,
        decode={
            "reason_codes": ("reason_codes", schema.names),
            "retention_action": ("retention_action", action_names(actions)),
        },
        raw_model=RAW,
    )
    return model_config(
        twin_name(RAW),
        [twin_input(len(schema.columns))],
        TWIN_OUTPUTS,
        device=device,
        instance_count=instance_count,
        parameters={**parameters, "id_column": schema.id_column or ""},
    )


def write_churn_twin(repo: ModelRepository, source: Path, config: ModelConfig) -> Path:
    """The raw version folder ``source`` copied as the next version of ``churn_features``."""
    return write_twin(repo, source, config, ARTIFACTS)


class ChurnTwinScorer(ChurnScorer):
    """:class:`ChurnScorer` over feature matrices: one ``features`` input ``[rows, width]``."""

    OUTPUTS: ClassVar[Sequence[TensorSpec]] = TWIN_OUTPUTS
    _check: FeatureCheck | None = None

    @property
    def inputs(self) -> list[TensorSpec]:
        return [twin_input(len(self.schema.columns))]

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        if self._check is None:
            self._check = FeatureCheck(self.schema, model=twin_name(RAW))
        return {"features": self._check(columns)}

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        prob, reasons, actions = self.score_matrix(rows["features"])
        return {"churn_probability": prob, "reason_codes": reasons, "retention_action": actions}
