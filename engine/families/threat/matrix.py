"""The threat model fed feature matrices: what bulk scans send to a server on the same host.

Text tensors are what costs most in Triton's python backend (every value becomes a Python object on both
sides). A scan computes the features itself, with the same kernels and the scaling the server publishes in
this model's config, and sends one FP32 matrix per request through shared memory; every output has a fixed
size (``top_columns`` are column indices), so answers come back through shared memory too.

``train threat`` writes this model beside ``threat`` as ``threat_features`` (``<name>_features``), with the
same version number and artifacts, so the two always score alike.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.device import Device
from engine.errors import InvalidInputError
from engine.families.contract import METRICS_FILE, model_config
from engine.families.threat.features import ThreatFeatures
from engine.families.threat.scorer import FEATURES_FILE, MODEL_FILE, N_TOP, PARAMS_FILE, ThreatScorer, top_columns
from engine.families.twin import INPUT, SUFFIX, check_matrix, write_twin
from engine.serving.config import ModelConfig, TensorSpec
from engine.serving.repository import ModelRepository
from engine.tables.schema import TableSchema

__all__ = ["MATRIX_INPUT", "MATRIX_OUTPUTS", "SUFFIX", "ThreatMatrixScorer", "matrix_config", "write_matrix_version"]

SHELL = "threat" + SUFFIX
MATRIX_INPUT = INPUT
MATRIX_OUTPUTS = (
    TensorSpec("anomaly_score", "FP32", (1,)),
    TensorSpec("is_threat", "BOOL", (1,)),
    TensorSpec("top_columns", "INT32", (N_TOP,)),
)


def matrix_inputs(features: ThreatFeatures) -> list[TensorSpec]:
    """The one FP32 input of a matrix model: a row of the feature width per event."""
    return [TensorSpec(MATRIX_INPUT, "FP32", (len(features.names),))]


def matrix_config(
    features: ThreatFeatures,
    *,
    name: str,
    threshold: float,
    max_batch_size: int,
    device: Device = "cpu",
    instance_count: int = 1,
) -> ModelConfig:
    """The config of ``<name>_features``: one FP32 input of the feature width; the schema and scaling a client
    needs to compute the features are parameters."""
    return model_config(
        name + SUFFIX,
        matrix_inputs(features),
        MATRIX_OUTPUTS,
        max_batch_size=max_batch_size,
        device=device,
        instance_count=instance_count,
        parameters={
            "threshold": repr(float(threshold)),
            "schema": features.schema.to_json(),
            "scaling": features.to_json(),
            "raw_model": name,
        },
    )


def write_matrix_version(repo: ModelRepository, source: Path, config: ModelConfig) -> Path:
    """Copy the version folder ``source`` of the raw model into the next version of the matrix model."""
    artifacts = (MODEL_FILE, "schema.json", FEATURES_FILE, PARAMS_FILE, METRICS_FILE)
    return write_twin(repo, source, config, artifacts, shell_of=SHELL)


def features_from_parameters(parameters: Mapping[str, str]) -> ThreatFeatures:
    """The :class:`ThreatFeatures` a matrix model publishes in its config."""
    schema = TableSchema.from_json(parameters["schema"])
    return ThreatFeatures.from_json(schema, parameters["scaling"])


class ThreatMatrixScorer(ThreatScorer):
    """:class:`ThreatScorer` over feature matrices: one ``features`` input ``[rows, width]``."""

    OUTPUTS: ClassVar[Sequence[TensorSpec]] = MATRIX_OUTPUTS

    @property
    def inputs(self) -> list[TensorSpec]:
        return matrix_inputs(self.features)

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        x = check_matrix(columns, model=self.name + SUFFIX, width=len(self.features.names))
        bad = ~np.isfinite(x)
        if bad.any():
            msg = f"input {MATRIX_INPUT!r} has a missing or infinite value at row {int(np.argmax(bad.any(axis=1)))}"
            raise InvalidInputError(msg)
        return {MATRIX_INPUT: x}

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        score, column_error = self.run(rows[MATRIX_INPUT])
        alert = score >= self.threshold
        return {"anomaly_score": score, "is_threat": alert, "top_columns": top_columns(column_error, alert)}
