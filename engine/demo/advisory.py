"""Synthetic advisory data: customers with investment profiles, a product catalogue, and who holds what.

The structure is known, so a recommender that works beats a random one on held-out holdings: customers belong
to one of a few taste clusters (each preferring some asset classes, regions and an ESG level), products have a
popularity that is skewed (Zipf-like), a product's risk level follows its asset class, a customer's tolerance
follows their goal and their horizon their age, and most holdings are suitable for their holder (real books
keep a few legacy products that are not).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["ADVISORY_FILES", "AdvisoryTables", "advisory_tables"]

ADVISORY_FILES = ("customers.parquet", "products.parquet", "holdings.parquet")

ASSET_CLASSES = ("money_market", "bond", "balanced", "equity", "real_estate", "commodity", "alternative")
#: Risk levels (SRRI 1-7) each asset class spans.
_RISK = {
    "money_market": (1, 2),
    "bond": (2, 4),
    "balanced": (3, 5),
    "equity": (4, 6),
    "real_estate": (3, 5),
    "commodity": (5, 7),
    "alternative": (5, 7),
}
REGIONS = ("global", "europe", "north_america", "asia", "emerging")
GOALS = ("preserve", "income", "growth", "speculate")
_GOAL_RISK = {"preserve": (1, 3), "income": (2, 4), "growth": (3, 6), "speculate": (5, 7)}
INCOME_BANDS = ("low", "middle", "high", "very_high")
ESG = ("none", "some", "strong")
MIN_INVESTMENTS = (0.0, 100.0, 1000.0, 5000.0, 25000.0, 100000.0)
CLUSTERS = 12


@dataclass(frozen=True)
class AdvisoryTables:
    customers: pl.DataFrame
    products: pl.DataFrame
    holdings: pl.DataFrame

    def write(self, folder: Path) -> dict[str, Path]:
        """The three tables as Parquet files in ``folder`` (created), by file name."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, frame in zip(ADVISORY_FILES, (self.customers, self.products, self.holdings), strict=True):
            paths[name] = folder / name
            frame.write_parquet(paths[name])
        return paths


def _products(rng: np.random.Generator, n: int) -> tuple[pl.DataFrame, np.ndarray]:
    asset = rng.choice(len(ASSET_CLASSES), n, p=[0.08, 0.22, 0.14, 0.32, 0.08, 0.06, 0.10])
    lo = np.array([_RISK[a][0] for a in ASSET_CLASSES])[asset]
    hi = np.array([_RISK[a][1] for a in ASSET_CLASSES])[asset]
    risk = rng.integers(lo, hi + 1)
    region = rng.choice(len(REGIONS), n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    esg = np.clip(rng.normal(50, 22, n), 0, 100)
    horizon = np.clip(np.round((risk - 1) * 2.0 + rng.normal(0, 1.5, n)), 0, 15)
    minimum = np.array(MIN_INVESTMENTS)[np.clip(rng.poisson(1.2, n) + (asset == 6) * 2, 0, len(MIN_INVESTMENTS) - 1)]
    fee = np.round(np.clip(0.05 + 0.25 * risk * rng.lognormal(-0.6, 0.5, n), 0.05, 2.5), 2)
    frame = pl.DataFrame(
        {
            "product_id": [f"P{i:06d}" for i in range(n)],
            "risk_level": risk.astype(np.int32),
            "asset_class": np.array(ASSET_CLASSES)[asset],
            "region": np.array(REGIONS)[region],
            "fee_pct": fee,
            "esg_score": np.round(esg, 1),
            "min_investment": minimum,
            "min_horizon_years": horizon,
        },
        schema_overrides={"risk_level": pl.Int32},
    )
    # Each cluster likes two asset classes, two regions and an ESG level; a product's affinity to a cluster.
    likes_asset = np.stack([rng.choice(len(ASSET_CLASSES), 2, replace=False) for _ in range(CLUSTERS)])
    likes_region = np.stack([rng.choice(len(REGIONS), 2, replace=False) for _ in range(CLUSTERS)])
    likes_esg = rng.random(CLUSTERS) < 0.35
    affinity = (
        1.0
        + 4.0 * (asset[None, :] == likes_asset[:, :1])
        + 2.5 * (asset[None, :] == likes_asset[:, 1:2])
        + 1.5 * (region[None, :] == likes_region[:, :1])
        + 1.0 * (region[None, :] == likes_region[:, 1:2])
        + 2.0 * (likes_esg[:, None] & (esg[None, :] > 65))
    )
    # Tastes beyond what the attributes show: a cluster's latent liking of each product.
    latent = rng.standard_normal((CLUSTERS, 8)) @ rng.standard_normal((8, n)) / np.sqrt(8)
    return frame, affinity * np.exp(1.5 * latent)


def _customers(rng: np.random.Generator, n: int) -> tuple[pl.DataFrame, np.ndarray]:
    cluster = rng.integers(0, CLUSTERS, n)
    goal = rng.choice(len(GOALS), n, p=[0.2, 0.3, 0.4, 0.1])
    lo = np.array([_GOAL_RISK[g][0] for g in GOALS])[goal]
    hi = np.array([_GOAL_RISK[g][1] for g in GOALS])[goal]
    tolerance = rng.integers(lo, hi + 1)
    age = np.clip(rng.normal(47, 15, n).round(), 18, 90).astype(np.int32)
    horizon = np.round(np.clip((70 - age) * rng.uniform(0.3, 0.9, n) + rng.normal(0, 2, n), 0.5, 40), 1)
    income = rng.choice(len(INCOME_BANDS), n, p=[0.25, 0.45, 0.22, 0.08])
    esg = rng.choice(len(ESG), n, p=[0.5, 0.35, 0.15])
    frame = pl.DataFrame(
        {
            "customer_id": [f"K{i:07d}" for i in range(n)],
            "risk_tolerance": tolerance.astype(np.int32),
            "horizon_years": horizon,
            "age": age,
            "income_band": np.array(INCOME_BANDS)[income],
            "esg_preference": np.array(ESG)[esg],
            "goal": np.array(GOALS)[goal],
        },
        schema_overrides={"risk_tolerance": pl.Int32, "age": pl.Int32},
    )
    return frame, cluster


def advisory_tables(customers: int = 2000, products: int = 3000, *, seed: int = 11) -> AdvisoryTables:
    """``customers`` customers holding 2-40 of ``products`` products each (median about 8)."""
    rng = np.random.default_rng(seed)
    catalogue, affinity = _products(rng, products)
    people, cluster = _customers(rng, customers)
    popularity = 1.0 / np.arange(1, products + 1) ** 0.6
    popularity = popularity[rng.permutation(products)]
    risk = catalogue["risk_level"].to_numpy()
    tolerance = people["risk_tolerance"].to_numpy()
    minimum = catalogue["min_investment"].to_numpy()
    counts = np.clip(np.round(rng.lognormal(np.log(8), 0.7, customers)), 2, 40).astype(int)
    users, items = [], []
    for c in range(customers):
        taste = affinity[cluster[c]] * popularity
        taste = np.where(risk <= tolerance[c], taste, taste * 0.03)  # unsuitable: rare legacy holdings
        n_taste = int(round(counts[c] * 0.85))
        picks = rng.choice(products, n_taste, replace=False, p=taste / taste.sum())
        noise = rng.choice(products, counts[c] - n_taste, replace=False)
        chosen = np.unique(np.concatenate([picks, noise]))
        users.append(np.full(len(chosen), c))
        items.append(chosen)
    u, i = np.concatenate(users), np.concatenate(items)
    amount = np.round(np.maximum(minimum[i], 100.0) * (1.0 + rng.lognormal(0.3, 0.8, len(i))), 2)
    start = date(2023, 1, 1).toordinal()
    days = rng.integers(0, date(2024, 12, 31).toordinal() - start + 1, len(i))
    holdings = pl.DataFrame(
        {
            "customer_id": people["customer_id"].to_numpy()[u],
            "product_id": catalogue["product_id"].to_numpy()[i],
            "amount": amount,
            "date": [date.fromordinal(start + int(d)) for d in days],
        }
    )
    return AdvisoryTables(people, catalogue, holdings)
