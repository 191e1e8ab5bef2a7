"""A generated marketing data set: bank customers in four planted segments, who subscribed to a term deposit, and
the offers a campaign can make them.

``customers.parquet`` feeds the segments model (``finscore train segments --id customer_id --drop subscribed
first_name``), the propensity model (``--label subscribed``) and the campaign planner; ``offers.csv`` holds
each offer's value of a conversion, cost per contact and capacity (contacts at most).

The segments, in the proportions of :data:`SEGMENTS`:

- young digital: under 35, small balances, many app log-ins, no branch visits, students and employees, single;
- older branch savers: retired, high balances, long tenure, branch visits, few log-ins;
- mid-career borrowers: around 40, mortgages and loans, several products, the web channel, married;
- affluent professionals: high incomes, many products, managers and the self-employed.

``subscribed`` (yes/no) follows a logistic model of the columns: it rises with the balance, retirement age, being
a student, products held, digital activity and consent, and falls with a loan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

__all__ = [
    "CUSTOMER_ID",
    "LABEL",
    "NAME",
    "SEGMENTS",
    "marketing_customers",
    "marketing_offers",
    "write_marketing",
]

CUSTOMER_ID = "customer_id"
LABEL = "subscribed"
#: The first name, for personalised messages: never a model feature.
NAME = "first_name"
SEGMENTS = {
    "young digital": 0.30,
    "older branch savers": 0.25,
    "mid-career borrowers": 0.30,
    "affluent professionals": 0.15,
}
_FIRST_NAMES = (
    "Maria Ana Laura Sofia Emma Julia Lea Chloe Sara Ines Marta Eva Nora Lina Clara Alice Rosa Irene Paula Elena "
    "John Luis Pedro Marco Paul David Adam Noah Liam Hugo Tomas Jan Felix Leo Ivan Omar Karim Sami Yusuf Pierre "
    "Aisha Fatima Mei Yuki Priya Anya Olga Zofia Ingrid Freya Kofi Amara Chen Ravi Diego Mateo Nils Otto Emil Ali"
).split()


def _choice(rng: np.random.Generator, seg: np.ndarray, table: dict[int, dict[str, float]]) -> np.ndarray:
    """A categorical column whose distribution depends on the segment."""
    out = np.empty(len(seg), dtype=object)
    for s, dist in table.items():
        mine = seg == s
        out[mine] = rng.choice(list(dist), mine.sum(), p=list(dist.values()))
    return out


def marketing_customers(rows: int = 5000, *, seed: int = 17, missing: float = 0.02) -> pl.DataFrame:
    """The customer table (one row per customer) with the ``subscribed`` label.

    >>> df = marketing_customers(300, seed=1)
    >>> df.height, sorted(df.get_column("subscribed").unique().to_list())
    (300, ['no', 'yes'])
    """
    if rows < 1:
        msg = f"rows must be positive, got {rows}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    seg = rng.choice(len(SEGMENTS), rows, p=list(SEGMENTS.values()))

    def per_segment(draw: dict[int, np.ndarray]) -> np.ndarray:
        return np.select([seg == s for s in draw], list(draw.values()))

    n = rows
    age = per_segment(
        {0: rng.normal(26, 4, n), 1: rng.normal(67, 6, n), 2: rng.normal(43, 5, n), 3: rng.normal(52, 6, n)}
    )
    age = np.clip(np.round(age), 18, 95).astype(np.int32)
    balance = per_segment(
        {
            0: rng.lognormal(6.5, 0.6, n),
            1: rng.lognormal(10.3, 0.5, n),
            2: rng.lognormal(7.8, 0.5, n),
            3: rng.lognormal(10.6, 0.5, n),
        }
    )
    income = per_segment(
        {
            0: rng.normal(24_000, 5_000, n),
            1: rng.normal(32_000, 8_000, n),
            2: rng.normal(55_000, 9_000, n),
            3: rng.normal(150_000, 25_000, n),
        }
    ).clip(8_000, None)
    tenure = per_segment(
        {0: rng.uniform(0, 4, n), 1: rng.uniform(15, 40, n), 2: rng.uniform(3, 12, n), 3: rng.uniform(8, 25, n)}
    )
    tenure = np.minimum(tenure, age - 17.5).clip(0.1, None)
    products = per_segment(
        {
            0: rng.poisson(0.5, n) + 1,
            1: rng.poisson(1.5, n) + 1,
            2: rng.poisson(1.0, n) + 3,
            3: rng.poisson(2.0, n) + 5,
        }
    ).astype(np.int32)
    logins = per_segment(
        {
            0: rng.normal(26, 5, n),
            1: rng.poisson(1, n).astype(float),
            2: rng.normal(7, 3, n),
            3: rng.normal(14, 4, n),
        }
    )
    logins = np.clip(np.round(logins), 0, None).astype(np.int32)
    visits = per_segment(
        {0: rng.poisson(0.1, n), 1: rng.poisson(4, n) + 1, 2: rng.poisson(1, n), 3: rng.poisson(1, n)}
    ).astype(np.int32)
    channel = _choice(
        rng,
        seg,
        {
            0: {"app": 0.85, "web": 0.15},
            1: {"branch": 0.85, "web": 0.1, "app": 0.05},
            2: {"web": 0.8, "app": 0.15, "branch": 0.05},
            3: {"web": 0.45, "app": 0.45, "branch": 0.1},
        },
    )
    job = _choice(
        rng,
        seg,
        {
            0: {"student": 0.45, "employee": 0.5, "self-employed": 0.05},
            1: {"retired": 0.85, "self-employed": 0.1, "employee": 0.05},
            2: {"employee": 0.8, "manager": 0.1, "self-employed": 0.1},
            3: {"manager": 0.6, "self-employed": 0.4},
        },
    )
    marital = _choice(
        rng,
        seg,
        {
            0: {"single": 0.85, "married": 0.15},
            1: {"married": 0.6, "widowed": 0.3, "divorced": 0.1},
            2: {"married": 0.75, "divorced": 0.15, "single": 0.1},
            3: {"married": 0.7, "divorced": 0.15, "single": 0.15},
        },
    )
    has_loan = rng.random(n) < np.array([0.15, 0.1, 0.85, 0.2])[seg]
    consent = rng.random(n) < 0.7

    z = (
        -2.3
        + 0.7 * (np.log(balance) - 8.0)
        + 0.9 * (age >= 60)
        + 0.8 * (job == "student")
        - 1.0 * has_loan
        + 0.04 * (logins - 10)
        + 0.25 * (products - 2)
        + 0.4 * consent
    )
    subscribed = rng.random(n) < 1.0 / (1.0 + np.exp(-z))

    income_col: list[float | None] = np.round(income, -2).tolist()
    job_col: list[str | None] = job.tolist()
    for i in np.flatnonzero(rng.random(n) < missing):
        income_col[i] = None
    for i in np.flatnonzero(rng.random(n) < missing / 2):
        job_col[i] = None
    return pl.DataFrame(
        {
            CUSTOMER_ID: [f"M{seed:03d}{i:07d}" for i in range(n)],
            "age": age,
            "balance": np.round(balance, 2),
            "income": pl.Series(income_col, dtype=pl.Float64),
            "tenure_years": np.round(tenure, 1),
            "products": products,
            "digital_logins_month": logins,
            "branch_visits_month": visits,
            "channel": channel.tolist(),
            "job": pl.Series(job_col, dtype=pl.String),
            "marital": marital.tolist(),
            "has_loan": has_loan,
            "marketing_consent": consent,
            NAME: rng.choice(_FIRST_NAMES, n).tolist(),
            LABEL: np.where(subscribed, "yes", "no").tolist(),
        }
    )


def marketing_offers(rows: int = 5000) -> pl.DataFrame:
    """Three offers: the value of a conversion, the cost of a contact, and the most contacts a campaign makes
    (capacity scales with the customer table's ``rows``)."""
    return pl.DataFrame(
        {
            "offer": ["term_deposit", "credit_card", "investment_fund"],
            "value": [120.0, 60.0, 250.0],
            "cost": [2.5, 1.5, 6.0],
            "capacity": [max(1, rows // 5), max(1, rows // 4), max(1, rows // 20)],
        }
    )


def write_marketing(out: Path, rows: int = 5000, *, seed: int = 17) -> tuple[Path, Path]:
    """Write ``customers.parquet`` and ``offers.csv`` into the folder ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    customers, offers = out / "customers.parquet", out / "offers.csv"
    marketing_customers(rows, seed=seed).write_parquet(customers)
    marketing_offers(rows).write_csv(offers)
    return customers, offers
