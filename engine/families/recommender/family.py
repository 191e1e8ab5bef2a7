"""The recommender family as the contract declares it (registered in :mod:`engine.families.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.families.contract import Family, ServedModel
from engine.families.recommender.scorer import RecommenderScorer
from engine.families.recommender.train import train_recommender

__all__ = ["FAMILY"]


def example(folder: Path) -> dict[str, Any]:
    """300 generated customers, 400 products and their holdings, with tastes that cluster."""
    from engine.demo.advisory import advisory_tables

    paths = advisory_tables(300, 400, seed=5).write(folder)
    return {
        "interactions": paths["holdings.parquet"],
        "customers": paths["customers.parquet"],
        "products": paths["products.parquet"],
        "weight": "amount",
    }


SUMMARY = "collaborative (ALS) and content-based investment recommendations, suitability rules, faiss retrieval"
FAMILY = Family(
    "recommender",
    SUMMARY,
    train_recommender,
    (ServedModel("recommender", RecommenderScorer, "reasons", reasons_per_item=True),),
    example,
)
