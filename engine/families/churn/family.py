"""The churn family as the contract declares it (registered in :mod:`engine.families.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.families.churn.scorer import ChurnScorer
from engine.families.churn.train import train_churn
from engine.families.churn.twin import ChurnTwinScorer
from engine.families.contract import Family, ServedModel

__all__ = ["FAMILY"]


def example(folder: Path) -> dict[str, Any]:
    """600 generated customers with a known churn signal."""
    from engine.demo.tables import CHURN_ID, CHURN_LABEL, churn_customers

    path = folder / "customers.parquet"
    churn_customers(600, seed=3).write_parquet(path)
    return {"data": path, "label": CHURN_LABEL, "id_column": CHURN_ID}


SUMMARY = "gradient-boosted trees on a customer table: probability, TreeSHAP reason codes, retention action"
FAMILY = Family(
    "churn",
    SUMMARY,
    train_churn,
    (
        ServedModel("churn", ChurnScorer, "reason_codes"),
        # The same version fed feature tensors: reasons are indices into the published schema's columns.
        ServedModel("churn_features", ChurnTwinScorer, "reason_codes"),
    ),
    example,
)
