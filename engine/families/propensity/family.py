"""The propensity family as the contract declares it (registered in :mod:`engine.families.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.families.contract import Family, ServedModel
from engine.families.propensity.scorer import PropensityScorer
from engine.families.propensity.train import train_propensity

__all__ = ["FAMILY"]


def example(folder: Path) -> dict[str, Any]:
    """600 generated customers who took an offer or not, with a known signal (churn's generated table, its
    label read as the offer taken)."""
    from engine.demo.tables import CHURN_ID, CHURN_LABEL, churn_customers

    path = folder / "customers.parquet"
    churn_customers(600, seed=5).write_parquet(path)
    return {"data": path, "label": CHURN_LABEL, "id_column": CHURN_ID}


SUMMARY = "gradient-boosted trees on a customer table: probability of taking an offer and TreeSHAP reason codes"
FAMILY = Family(
    "propensity", SUMMARY, train_propensity, (ServedModel("propensity", PropensityScorer, "reason_codes"),), example
)
