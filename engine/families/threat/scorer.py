"""Scoring threats: reconstruction error, the alert decision, and the columns that explain it.

:class:`ThreatScorer` is what the served ``threat`` model runs and what ``finscore scan --local`` uses, so
both give the same answers. Requests arrive as Triton delivers them (see :mod:`engine.tables.checks`); bulk scans
hand whole frames to :meth:`ThreatScorer.score_frame`, skipping the per-request checks.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from engine.device import Device, onnx_session, polars_engine
from engine.families.contract import N_REASONS, load_version, reason_names, schema_inputs, top_indices
from engine.families.threat.features import ThreatFeatures
from engine.serving.config import TensorSpec
from engine.serving.metrics import Monitored
from engine.tables.checks import rows_frame, validate_columns
from engine.tables.schema import TableSchema

__all__ = ["MODEL_FILE", "OUTPUTS", "PARAMS_FILE", "ThreatScorer", "top_columns"]

MODEL_FILE = "model.onnx"
#: The exported graph's tensors (engine.families.threat.network writes them); scoring needs no torch.
INPUT_NAME = "features"
OUTPUT_NAMES = ("anomaly_score", "column_error")
PARAMS_FILE = "threat.json"
FEATURES_FILE = "features.json"
N_TOP = N_REASONS
OUTPUTS = (
    TensorSpec("anomaly_score", "FP32", (1,)),
    TensorSpec("is_threat", "BOOL", (1,)),
    TensorSpec("top_features", "BYTES", (N_TOP,)),
)


def top_columns(column_error: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
    """Indices (INT32, ``[n, 3]``) of the raw columns with the largest error for ``rows``; -1 elsewhere and
    where there are fewer than three columns."""
    top = np.full((len(column_error), N_TOP), -1, dtype=np.int32)
    top[rows] = top_indices(column_error[rows], N_TOP)
    return top


class ThreatScorer:
    """A trained threat version, ready to score."""

    def __init__(
        self,
        model_path: Path,
        features: ThreatFeatures,
        threshold: float,
        *,
        name: str = "threat",
        device: Device = "cpu",
        version: str = "",
        threads: int = 1,
    ) -> None:
        self.features = features
        self.schema = features.schema
        self.threshold = float(threshold)
        self.name = name
        self.device = device
        self.version = version
        self._engine = polars_engine(device)
        self._session = onnx_session(model_path, device, threads)
        self._wire_exprs = features.expressions(self.schema.wire_dtypes())

    @classmethod
    def load(cls, version_dir: str | Path, *, device: Device = "cpu", threads: int = 1) -> ThreatScorer:
        """Load a version folder written by :func:`engine.families.threat.train.train_threat`."""

        def read(d: Path) -> ThreatScorer:
            params = json.loads((d / PARAMS_FILE).read_text(encoding="utf-8"))
            schema = TableSchema.load(d / "schema.json")
            features = ThreatFeatures.load(schema, d / FEATURES_FILE)
            return cls(
                d / MODEL_FILE,
                features,
                params["threshold"],
                name=params.get("name", "threat"),
                device=device,
                version=d.name,
                threads=threads,
            )

        return load_version(version_dir, family="threat", model_file=MODEL_FILE, read=read)

    OUTPUTS: ClassVar[Sequence[TensorSpec]] = OUTPUTS

    @property
    def monitored(self) -> Monitored:
        """What the served model's metrics watch (:mod:`engine.serving.metrics`): the anomaly score in buckets
        around the alert threshold (a reconstruction error has no scale of its own), and the alerts."""
        bounds = tuple(self.threshold * f for f in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0))
        return Monitored("anomaly_score", buckets=bounds, decision="is_threat", names=("clear", "alert"))

    @property
    def inputs(self) -> list[TensorSpec]:
        return schema_inputs(self.schema)

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Check a request; return its columns as 1-D arrays (see :func:`engine.tables.checks.validate_columns`)."""
        return validate_columns(self.schema, columns, model=self.name)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exported graph on a feature matrix: (anomaly score, per-column error)."""
        score, column_error = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})  # type: ignore[attr-defined]
        return np.asarray(score, dtype=np.float32), column_error

    def score_matrix(self, x: np.ndarray, *, explain: str = "all") -> dict[str, np.ndarray]:
        """Score a feature matrix (as :meth:`ThreatFeatures.matrix` returns).

        ``explain`` says which rows get ``top_features``: ``"all"``, ``"threats"`` (only the rows that alert,
        in order, ``[alerts, 3]``: what a bulk scan needs, at a fraction of the cost) or ``"none"``.
        """
        score, column_error = self.run(x)
        out = {"anomaly_score": score, "is_threat": score >= self.threshold}
        if explain == "none":
            return out
        if explain == "threats":
            column_error = column_error[out["is_threat"]]
        out["top_features"] = reason_names(top_indices(column_error, N_TOP), self.schema.names)
        return out

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Score validated rows (as :meth:`validate` returns); ``top_features`` only if ``outputs`` asks."""
        frame = rows_frame(self.schema, rows)
        explain = "all" if outputs is None or "top_features" in outputs else "none"
        x = self.features.matrix(frame, engine=self._engine, exprs=self._wire_exprs)
        return self.score_matrix(x, explain=explain)

    def score_frame(self, df: pl.DataFrame, *, explain: str = "all") -> dict[str, np.ndarray]:
        """Score a table's rows as they are (numbers, text, or CSV text parsed by the kernels)."""
        return self.score_matrix(self.features.matrix(df, engine=self._engine), explain=explain)

    def score(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Validate and score one request: ``{column: array}`` → ``{output: array}``."""
        return self.score_rows(self.validate(columns))
