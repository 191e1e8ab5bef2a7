"""Synthetic customer tables with a known churn signal, so demos and tests need nothing from outside."""

from __future__ import annotations

import numpy as np
import polars as pl

__all__ = ["CHURN_LABEL", "CHURN_ID", "churn_customers"]

CHURN_LABEL = "churned"
CHURN_ID = "customer_id"


def churn_customers(rows: int = 5000, *, seed: int = 7, missing: float = 0.02) -> pl.DataFrame:
    """A retail-bank customer table whose ``churned`` (Yes/No) follows a logistic model of its columns.

    Churn rises with a monthly contract, support calls, complaints, a short tenure, a high fee relative to
    the plan and digital inactivity; a few per cent of some values are missing, as in real extracts.

    >>> df = churn_customers(200, seed=1)
    >>> df.height, sorted(df.get_column("churned").unique().to_list())
    (200, ['No', 'Yes'])
    """
    if rows < 1:
        msg = f"rows must be positive, got {rows}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 86, rows)
    tenure = np.minimum(rng.gamma(2.0, 22.0, rows).astype(int), (age - 17) * 12)
    plan = rng.choice(["basic", "standard", "premium"], rows, p=[0.5, 0.35, 0.15])
    base_fee = np.select([plan == "basic", plan == "standard"], [5.0, 12.0], 25.0)
    monthly_fee = np.round(base_fee * rng.lognormal(0.0, 0.25, rows), 2)
    contract = rng.choice(["monthly", "annual", "two-year"], rows, p=[0.55, 0.3, 0.15])
    products = rng.poisson(1.2, rows) + 1
    support_calls = rng.poisson(np.where(plan == "basic", 1.5, 0.8))
    complaints = rng.binomial(support_calls, 0.25)
    digital = rng.random(rows) < 0.35 + 0.004 * (70 - age).clip(0, 50)
    payment = rng.choice(["card", "direct debit", "cash", "bank transfer"], rows, p=[0.35, 0.4, 0.1, 0.15])
    region = rng.choice(["north", "south", "east", "west", "capital"], rows)
    balance = np.round(np.where(rng.random(rows) < 0.3, 0.0, rng.lognormal(8.0, 1.2, rows)), 2)
    last_login = np.where(digital, rng.exponential(6, rows), rng.exponential(45, rows)).astype(int)

    z = (
        -2.2
        + 1.3 * (contract == "monthly")
        - 0.6 * (contract == "two-year")
        + 0.35 * support_calls
        + 0.7 * complaints
        - 0.025 * np.minimum(tenure, 72)
        + 0.9 * (monthly_fee / base_fee - 1.0)
        - 0.6 * digital
        + 0.012 * np.minimum(last_login, 90)
        - 0.25 * (products - 1)
        + 0.4 * (payment == "cash")
        - 0.15 * (balance > 10_000)
    )
    churned = rng.random(rows) < 1.0 / (1.0 + np.exp(-z))

    df = pl.DataFrame(
        {
            CHURN_ID: [f"C{seed:03d}{i:07d}" for i in range(rows)],
            "age": age,
            "tenure_months": tenure,
            "plan": plan,
            "contract": contract,
            "monthly_fee": monthly_fee,
            "products": products,
            "support_calls_90d": support_calls,
            "complaints_12m": complaints,
            "digital_active": np.where(digital, "Yes", "No"),
            "days_since_login": last_login,
            "payment_method": payment,
            "region": region,
            "balance": balance,
            CHURN_LABEL: np.where(churned, "Yes", "No"),
        }
    )
    holes = {name: rng.random(rows) < missing for name in ("monthly_fee", "payment_method", "days_since_login")}
    return df.with_columns(
        pl.when(pl.Series(mask)).then(None).otherwise(pl.col(name)).alias(name) for name, mask in holes.items()
    )
