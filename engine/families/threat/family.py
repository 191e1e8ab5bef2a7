"""The threat family as the contract declares it (registered in :mod:`engine.families.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.families.contract import Family, ServedModel
from engine.families.threat.matrix import SUFFIX, ThreatMatrixScorer
from engine.families.threat.scorer import ThreatScorer
from engine.families.threat.train import train_threat

__all__ = ["FAMILY"]


def example(folder: Path) -> dict[str, Any]:
    """1,500 generated network connections, 5% of them attacks."""
    from engine.demo.tables import EVENT_LABEL, network_events

    path = folder / "events.parquet"
    network_events(1500, seed=3).write_parquet(path)
    return {"data": path, "label": EVENT_LABEL}


FAMILY = Family(
    name="threat",
    summary="autoencoder over network and auth-log events: anomaly score, alert, the columns that explain it",
    train=train_threat,
    served=(
        ServedModel("threat", ThreatScorer, reasons="top_features"),
        # The same version fed feature matrices (bulk scans): reasons are indices into the published schema.
        ServedModel("threat" + SUFFIX, ThreatMatrixScorer, reasons="top_columns"),
    ),
    example=example,
)
