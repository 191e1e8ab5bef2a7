"""Scoring churn: probabilities, TreeSHAP reason codes and a retention action, for any batch size.

:class:`ChurnScorer` is what the served model runs and what in-process scoring uses, so both give the
same answers. Inputs are a mapping of column name to a 1-D (or ``[n, 1]``) array, as Triton delivers them:
FP32 numbers (NaN = missing) and BYTES/str text (empty = missing).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import xgboost as xgb

from engine.device import Device, polars_engine, xgboost_device
from engine.families.churn.actions import NO_ACTION, read_actions
from engine.families.contract import N_REASONS, load_version, reason_names, schema_inputs
from engine.families.twin import TableEncoder
from engine.serving.config import TensorSpec
from engine.serving.metrics import Monitored
from engine.tables.schema import TableSchema
from kernels.ranking import reason_scores
from kernels.treeshap import ShallowTreeShap

__all__ = ["MODEL_FILE", "OUTPUTS", "PARAMS_FILE", "Calibration", "ChurnScorer", "action_names"]

MODEL_FILE = "model.ubj"
PARAMS_FILE = "churn.json"
OUTPUTS = (
    TensorSpec("churn_probability", "FP32", (1,)),
    TensorSpec("reason_codes", "BYTES", (N_REASONS,)),
    TensorSpec("retention_action", "BYTES", (1,)),
)


def action_names(actions: Mapping[str, str]) -> list[str]:
    """Every retention action a version can answer, :data:`NO_ACTION` first: what the feature-tensor twin's
    INT32 ``retention_action`` indexes (its config publishes the list)."""
    return [NO_ACTION, *sorted(set(actions.values()) - {NO_ACTION})]


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of the booster's margin: ``p = 1 / (1 + exp(-(a * margin + b)))``."""

    a: float
    b: float

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        z = self.a * margin.astype(np.float64) + self.b
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


_S = TypeVar("_S", bound="ChurnScorer")


class ChurnScorer:
    """A trained churn version, ready to score. (The propensity family's scorer is this one with other outputs and
    no retention actions: see :mod:`engine.families.propensity`.)"""

    #: The family whose version folders this class loads, and the parameters file in them.
    family: ClassVar[str] = "churn"
    params_file: ClassVar[str] = PARAMS_FILE

    def __init__(
        self,
        booster: xgb.Booster,
        schema: TableSchema,
        calibration: Calibration,
        threshold: float,
        actions: Mapping[str, str],
        *,
        device: Device = "cpu",
        version: str = "",
        threads: int = 1,
    ) -> None:
        self.booster = booster
        self.schema = schema
        self.calibration = calibration
        self.threshold = float(threshold)
        self.actions = dict(actions)
        self.device = device
        self.version = version
        # The GPU path batches through cuDF; memoised kernels serve small batches on the CPU.
        self.encoder = TableEncoder(schema, model=self.family, engine=polars_engine(device), online=device == "cpu")
        self.action_names = action_names(self.actions)
        # A reason's column index (-1: none, the last slot) -> its action's index in action_names.
        code = {name: i for i, name in enumerate(self.action_names)}
        self._action_of = np.array(
            [code[self.actions.get(name, NO_ACTION)] for name in schema.names] + [0], dtype=np.int32
        )
        self._feature_types = [c.xgb_type for c in schema.columns]
        self._names = schema.names
        # One thread per Triton instance: instances, not threads, use the cores.
        self.booster.set_param({"device": xgboost_device(device), "nthread": threads})
        # On the CPU, shallow trees' TreeSHAP is a table look-up (kernels.treeshap); the GPU runs XGBoost's
        # GPUTreeShap, and so do models too deep for the tables.
        self._shap = self._tables() if device == "cpu" else None

    def _tables(self) -> ShallowTreeShap | None:
        n = len(self._names)
        empty = xgb.DMatrix(
            np.full((1, n), np.nan, dtype=np.float32), feature_types=self._feature_types, enable_categorical=True
        )
        bias = float(self.booster.predict(empty, pred_contribs=True, validate_features=False)[0, -1])
        return ShallowTreeShap.from_model(self.booster.save_raw("json"), n_features=n, bias=bias)

    @classmethod
    def read_actions(cls, version_dir: Path) -> dict[str, str]:
        """The version's retention actions (feature -> action)."""
        return read_actions(version_dir / "actions.csv")

    @classmethod
    def load(cls: type[_S], version_dir: str | Path, *, device: Device = "cpu", threads: int = 1) -> _S:
        """Load a version folder written by :func:`engine.families.churn.train.train_churn`."""

        def read(d: Path) -> _S:
            booster = xgb.Booster()
            booster.load_model(d / MODEL_FILE)
            params = json.loads((d / cls.params_file).read_text(encoding="utf-8"))
            return cls(
                booster,
                TableSchema.load(d / "schema.json"),
                Calibration(**params["calibration"]),
                params["threshold"],
                cls.read_actions(d),
                device=device,
                version=d.name,
                threads=threads,
            )

        return load_version(
            version_dir, family=cls.family, model_file=MODEL_FILE, read=read, errors=(xgb.core.XGBoostError,)
        )

    OUTPUTS: ClassVar[Sequence[TensorSpec]] = OUTPUTS
    #: What the served model's metrics watch (:mod:`engine.serving.metrics`).
    monitored: ClassVar[Monitored] = Monitored("churn_probability", decision="retention_action")

    @property
    def inputs(self) -> list[TensorSpec]:
        return schema_inputs(self.schema)

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Check a request; return its columns as 1-D arrays (float32 numbers, ``str | None`` text).

        Any fault is an :class:`InvalidInputError` naming the input.
        """
        return self.encoder.validate(columns)

    def features(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """The feature matrix of validated rows: memoised kernels for small CPU batches, Polars otherwise."""
        return self.encoder.features(rows)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions of a feature matrix, ``[rows, features + 1]``, the last column the bias."""
        if self._shap is not None:
            return self._shap.contributions(x)
        # Columns are in schema order by construction: skip XGBoost's per-call name check.
        dm = xgb.DMatrix(x, feature_types=self._feature_types, enable_categorical=True)
        return self.booster.predict(dm, pred_contribs=True, validate_features=False)

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Score validated rows (as :meth:`validate` returns); every output is computed (TreeSHAP gives the
        probability and the reasons in one pass), whatever ``outputs`` asks for."""
        prob, reasons, actions = self.score_matrix(self.features(rows))
        return {
            "churn_probability": prob,
            "reason_codes": reason_names(reasons, self._names),
            "retention_action": np.asarray(self.action_names, dtype=object)[actions],
        }

    def score_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probability FP32, reason column indices INT32 ``[rows, 3]`` with -1 for none, action index INT32
        into :attr:`action_names`) of a feature matrix: what both the raw model and its twin answer from."""
        # One kernel call for the whole decision: TreeSHAP is additive (the row sum is the margin); the reasons
        # are the features that raise the risk most; below the threshold, or with no such reason, no action.
        c = self.calibration
        if self._shap is not None:  # the table look-ups and the decision in one kernel call
            return self._shap.reason_scores(
                x, a=c.a, b=c.b, threshold=self.threshold, k=N_REASONS, action_of=self._action_of
            )
        return reason_scores(self.contributions(x), c.a, c.b, self.threshold, N_REASONS, self._action_of)

    def score(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Validate and score one request: ``{column: array}`` → ``{output: array}``."""
        return self.score_rows(self.validate(columns))
