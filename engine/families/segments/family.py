"""The segments family as the contract declares it (registered in :mod:`engine.families.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.families.contract import Family, ServedModel
from engine.families.segments.scorer import SegmentScorer
from engine.families.segments.train import train_segments

__all__ = ["FAMILY"]


def example(folder: Path) -> dict[str, Any]:
    """400 generated marketing customers (four planted segments)."""
    from engine.demo.marketing import CUSTOMER_ID, LABEL, NAME, marketing_customers

    path = folder / "customers.parquet"
    marketing_customers(400, seed=5).write_parquet(path)
    return {"data": path, "id_column": CUSTOMER_ID, "drop": [LABEL, NAME], "k": 4}


SUMMARY = "customer segments (k-means or Gaussian mixtures): a segment id stable across retrains, its name in words"
FAMILY = Family("segments", SUMMARY, train_segments, (ServedModel("segments", SegmentScorer, "reason_codes"),), example)
