"""Valid requests of the served models for :mod:`bench.hostile`, and a server on generated data to run it on."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import tritonclient.grpc as grpcclient

from bench.hostile import Arrays, ModelTarget
from clients.tensors import InputSpec, encode_inputs
from engine.serving.server import TritonServer

__all__ = ["demo_targets", "targets_for"]


def _table_target(client: grpcclient.InferenceServerClient, model: str, rows: pl.DataFrame) -> ModelTarget:
    metadata = client.get_model_metadata(model)
    config = client.get_model_config(model, as_json=True)["config"]
    specs = [InputSpec(t.name, t.datatype) for t in metadata.inputs]
    pool = encode_inputs(rows, specs, model=model)
    n = rows.height

    def valid(rng: random.Random) -> Arrays:
        take = [rng.randrange(n) for _ in range(rng.choice([1, 1, 4, 32]))]
        return {k: v[take] for k, v in pool.items()}

    return ModelTarget(model, int(config.get("max_batch_size", 0)), {s.name: s.datatype for s in specs}, valid)


def _fraud_target(client: grpcclient.InferenceServerClient, start_us: int) -> ModelTarget:
    config = client.get_model_config("fraud", as_json=True)["config"]
    counter = itertools.count()
    types = {
        "transaction_id": "BYTES",
        "card_id": "BYTES",
        "terminal_id": "BYTES",
        "amount": "FP64",
        "timestamp": "INT64",
    }

    def valid(rng: random.Random) -> Arrays:
        i = next(counter)  # a new card each time: its first authorization is never out of order
        return {
            "transaction_id": np.array([[f"hostile-{start_us}-{i}".encode()]], dtype=object),
            "card_id": np.array([[f"hostile-card-{start_us}-{i}".encode()]], dtype=object),
            "terminal_id": np.array([[f"T{rng.randrange(50)}".encode()]], dtype=object),
            "amount": np.array([[round(rng.uniform(1, 500), 2)]]),
            "timestamp": np.array([[start_us + i]], dtype=np.int64),
        }

    return ModelTarget("fraud", int(config.get("max_batch_size", 0)), types, valid)


def targets_for(
    url: str,
    *,
    customers: pl.DataFrame | None = None,
    events: pl.DataFrame | None = None,
    fraud_start_us: int | None = None,
) -> list[ModelTarget]:
    """Targets for the models given data for: churn (customer rows), threat (event rows), fraud (authorizations
    at and after ``fraud_start_us``, later than anything the server holds)."""
    client = grpcclient.InferenceServerClient(url)
    try:
        out = []
        if customers is not None:
            out.append(_table_target(client, "churn", customers))
        if events is not None:
            out.append(_table_target(client, "threat", events))
        if fraud_start_us is not None:
            out.append(_fraud_target(client, fraud_start_us))
        return out
    finally:
        client.close()


@contextmanager
def demo_targets(root: Path) -> Iterator[tuple[TritonServer, list[ModelTarget]]]:
    """Churn, threat and fraud trained on generated data in ``root``, served by the bundled Triton."""
    import shutil

    from engine.demo.tables import CHURN_ID, CHURN_LABEL, EVENT_LABEL, churn_customers, network_events
    from engine.demo.transactions import synthetic_transactions
    from engine.families.churn import train_churn
    from engine.families.fraud import FraudColumns, train_fraud
    from engine.families.threat import train_threat
    from engine.serving.repository import ModelRepository
    from engine.serving.server import ServerPorts
    from engine.tables.io import write_table

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    repo = ModelRepository(root / "model_repo")
    customers = churn_customers(3000, seed=11)
    events = network_events(6000, seed=12)
    train_churn(write_table(customers, root / "customers.parquet"), label=CHURN_LABEL, id_column=CHURN_ID, repo=repo)
    train_threat(write_table(events, root / "events.parquet"), label=EVENT_LABEL, repo=repo)
    tx = synthetic_transactions(cards=300, terminals=300, days=10, seed=1)
    columns = FraudColumns(
        card="card_id", time="timestamp", amount="amount", label="is_fraud", terminal="terminal_id", id="transaction_id"
    )
    train_fraud(write_table(tx, root / "transactions.parquet"), columns=columns, delay_us=86_400_000_000,
                train_days=5, gap_days=1, test_days=3, repo=repo)  # fmt: skip
    start = int(tx["timestamp"].max().timestamp() * 1e6) + 86_400_000_000  # type: ignore[union-attr]
    with TritonServer(repo, ports=ServerPorts.free(), models=["churn", "threat", "fraud"]) as server:
        yield server, targets_for(server.grpc_url, customers=customers, events=events, fraud_start_us=start)
