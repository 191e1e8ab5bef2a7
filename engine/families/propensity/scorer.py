"""Scoring propensity: a calibrated probability that the customer takes the offer, and the three columns that
raise it most (TreeSHAP), from the raw customer columns.

The model is churn's (:class:`engine.families.churn.scorer.ChurnScorer`: the same features, trees, calibration and
reason codes, so in-process and served answers agree), with its own outputs and no retention actions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.families.churn.scorer import ChurnScorer
from engine.families.contract import N_REASONS, reason_names
from engine.serving.config import TensorSpec
from engine.serving.metrics import Monitored

__all__ = ["OUTPUTS", "PARAMS_FILE", "PropensityScorer"]

PARAMS_FILE = "propensity.json"
OUTPUTS = (
    TensorSpec("propensity", "FP32", (1,)),
    TensorSpec("reason_codes", "BYTES", (N_REASONS,)),
)


class PropensityScorer(ChurnScorer):
    """A trained propensity version, ready to score."""

    family: ClassVar[str] = "propensity"
    params_file: ClassVar[str] = PARAMS_FILE
    OUTPUTS: ClassVar[Sequence[TensorSpec]] = OUTPUTS
    monitored: ClassVar[Monitored] = Monitored("propensity")

    @classmethod
    def read_actions(cls, version_dir: Path) -> dict[str, str]:
        """None: a propensity answers no retention action."""
        return {}

    def score_rows(
        self, rows: Mapping[str, np.ndarray], *, outputs: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Score validated rows (as :meth:`validate` returns): the probability and the columns that raise it most."""
        prob, reasons, _ = self.score_matrix(self.features(rows))
        return {"propensity": prob, "reason_codes": reason_names(reasons, self._names)}
