"""Generated card transactions with the three fraud patterns of the Fraud Detection Handbook's simulator.

Each card has a usual amount and a daily rate and buys at terminals near it; frauds are (1) any amount over
220, (2) every transaction at a few compromised terminals for the next 28 days, (3) a third of a few
compromised cards' transactions over the next 14 days, at five times the amount. Vectorised NumPy, so ten
million rows take seconds; what tests, ``make run`` and the kernel benchmark use (no real card data).
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl

__all__ = ["synthetic_transactions"]

_EPOCH_2024 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000
_DAY_US = 86_400_000_000


def synthetic_transactions(
    *, cards: int = 2_000, terminals: int = 4_000, days: int = 30, seed: int = 0, start_us: int = _EPOCH_2024
) -> pl.DataFrame:
    """Columns ``transaction_id, card_id, terminal_id, amount, timestamp`` (datetime, UTC), ``is_fraud``;
    rows in time order."""
    rng = np.random.default_rng(seed)
    mean_amount = rng.uniform(5, 100, cards)
    rate = rng.uniform(0, 4, cards)
    per_card = rng.poisson(rate * days)
    card = np.repeat(np.arange(cards), per_card)
    n = len(card)
    when = start_us + rng.integers(0, days * _DAY_US, n)
    # Daytime purchases: fold the time of day towards 06:00-22:00.
    hour_shift = (rng.normal(14, 4, n).clip(0, 23.99) * 3_600_000_000).astype(np.int64)
    when = when - when % _DAY_US + hour_shift
    amount = np.round(np.abs(rng.normal(mean_amount[card], mean_amount[card] / 2)), 2)
    home = rng.integers(0, terminals, cards)
    terminal = (home[card] + rng.integers(-50, 51, n)) % terminals
    fraud = amount > 220
    day = (when - start_us) // _DAY_US
    for d in range(days):
        for t in rng.choice(terminals, size=max(1, terminals // 2000), replace=False):
            fraud |= (terminal == t) & (day >= d) & (day < d + 28)
        for c in rng.choice(cards, size=max(1, cards // 300), replace=False):
            hit = (card == c) & (day >= d) & (day < d + 14) & (rng.random(n) < 1 / 3)
            amount = np.where(hit, np.round(amount * 5, 2), amount)
            fraud |= hit
    order = np.argsort(when, kind="stable")
    return pl.DataFrame(
        {
            "transaction_id": np.arange(n, dtype=np.int64) + 1,
            "card_id": card[order],
            "terminal_id": terminal[order],
            "amount": amount[order],
            "timestamp": pl.Series(when[order]).cast(pl.Datetime("us", "UTC")),
            "is_fraud": fraud[order].astype(np.int8),
        }
    )
