"""The fraud family as the contract declares it (registered in :mod:`engine.families.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.families.contract import Family, ServedModel
from engine.families.fraud.data import FraudColumns
from engine.families.fraud.scorer import FraudScorer
from engine.families.fraud.train import train_fraud

__all__ = ["FAMILY"]

_DAY_US = 86_400_000_000


def example(folder: Path) -> dict[str, Any]:
    """Nine days of generated card transactions: five to train on, a day's gap, three to test."""
    from engine.demo.transactions import synthetic_transactions

    path = folder / "transactions.parquet"
    synthetic_transactions(cards=200, terminals=400, days=9, seed=3).write_parquet(path)
    columns = FraudColumns(
        card="card_id", time="timestamp", amount="amount", label="is_fraud", terminal="terminal_id", id="transaction_id"
    )
    return {"data": path, "columns": columns, "delay_us": _DAY_US, "train_days": 5, "gap_days": 1, "test_days": 3}


SUMMARY = "card authorizations scored from kept card and terminal state (online = offline): probability, decision"
SERVED = (ServedModel("fraud", FraudScorer, "reason_codes"),)
FAMILY = Family("fraud", SUMMARY, train_fraud, SERVED, example, stateful=True)
