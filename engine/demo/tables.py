"""Synthetic tables with a known signal (customers who churn, network events with attacks), so demos and
tests need nothing from outside."""

from __future__ import annotations

import numpy as np
import polars as pl

__all__ = ["CHURN_ID", "CHURN_LABEL", "EVENT_ID", "EVENT_LABEL", "churn_customers", "network_events"]

CHURN_LABEL = "churned"
CHURN_ID = "customer_id"
EVENT_LABEL = "label"
EVENT_ID = "event_id"


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


def network_events(rows: int = 20_000, *, seed: int = 3, attack_share: float = 0.05) -> pl.DataFrame:
    """Connection records (as network sensors summarise them) with a ``label``: ``normal`` or an attack type.

    Normal traffic is web, mail, DNS and SSH with typical sizes and durations; attacks are SYN floods
    (many short failed connections), port scans (many services, rejected), SSH brute force (failed logins)
    and exfiltration (huge uploads at night).

    >>> df = network_events(500, seed=1)
    >>> df.height, "normal" in df.get_column("label").to_list()
    (500, True)
    """
    if rows < 1:
        msg = f"rows must be positive, got {rows}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    kind = np.where(
        rng.random(rows) < attack_share,
        rng.choice(["syn_flood", "port_scan", "brute_force", "exfiltration"], rows),
        "normal",
    )
    service = rng.choice(["http", "https", "smtp", "dns", "ssh"], rows, p=[0.3, 0.4, 0.1, 0.15, 0.05])
    protocol = np.where(service == "dns", "udp", "tcp")
    hour = rng.integers(7, 20, rows)
    duration = rng.lognormal(0.5, 1.0, rows)
    bytes_out = rng.lognormal(6.5, 1.0, rows)
    bytes_in = bytes_out * rng.lognormal(2.0, 0.8, rows)
    conns = rng.poisson(4, rows).astype(float)
    failed = rng.binomial(1, 0.01, rows).astype(float)
    rejected = rng.beta(1, 40, rows)
    flag = np.where(rng.random(rows) < 0.97, "SF", "REJ")

    def at(name: str) -> np.ndarray:
        return kind == name

    n = rows
    service = np.where(at("port_scan"), rng.choice(["telnet", "ftp", "smb", "rdp", "http"], n), service)
    service = np.where(at("brute_force"), "ssh", service)
    protocol = np.where(at("syn_flood") | at("port_scan") | at("brute_force"), "tcp", protocol)
    flag = np.where(at("syn_flood"), "S0", np.where(at("port_scan"), "REJ", flag))
    duration = np.where(at("syn_flood") | at("port_scan"), 0.0, duration)
    bytes_out = np.where(at("syn_flood") | at("port_scan"), 0.0, bytes_out)
    bytes_in = np.where(at("syn_flood") | at("port_scan"), 0.0, bytes_in)
    bytes_out = np.where(at("exfiltration"), rng.lognormal(16.0, 0.7, n), bytes_out)
    conns = np.where(at("syn_flood"), rng.poisson(400, n), np.where(at("port_scan"), rng.poisson(60, n), conns))
    rejected = np.where(at("port_scan"), rng.beta(30, 2, n), rejected)
    failed = np.where(at("brute_force"), rng.poisson(12, n) + 3.0, failed)
    hour = np.where(at("exfiltration"), rng.integers(0, 5, n), hour)
    return pl.DataFrame(
        {
            EVENT_ID: np.arange(1, rows + 1, dtype=np.int64),
            "protocol": protocol,
            "service": service,
            "flag": flag,
            "hour": hour.astype(np.int64),
            "duration_s": np.round(duration, 3),
            "bytes_out": np.round(bytes_out),
            "bytes_in": np.round(bytes_in),
            "connections_per_min": conns,
            "failed_logins": failed,
            "rejected_rate": np.round(rejected, 4),
            EVENT_LABEL: kind,
        }
    )
