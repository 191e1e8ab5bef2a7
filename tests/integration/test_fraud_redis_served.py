"""Two real Triton servers sharing the fraud state in one Redis: a day replayed across both equals the batch
kernels, concurrent authorizations of one card through both lose nothing, and Redis going away is one clear
error per request while the servers stay up."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient

from clients import FraudClient
from engine.errors import ModelNotReadyError
from engine.families.fraud import FraudTrainResult, canonical
from engine.families.fraud.redis_state import ENV_VAR
from engine.serving.server import ServerPorts, TritonServer
from kernels.transactions import feature_names, transaction_features
from tests.conftest import FRAUD_COLUMNS, FRAUD_DELAY_US, running_redis

NAMES = feature_names()
COUNTS = [j for j, n in enumerate(NAMES) if "count" in n or n in {"hour", "weekday"}]
COUNT_1H = NAMES.index("card_count_1h")
T0 = 1_900_000_000_000_000


def _auth(txid: str, card: str, time: int, amount: float = 20.0) -> dict[str, list]:
    return {
        "transaction_id": [txid],
        "card_id": [card],
        "terminal_id": ["it-1"],
        "amount": [amount],
        "timestamp": [time],
    }


@pytest.fixture(scope="module")
def shared(
    fraud_trained: FraudTrainResult, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonServer, TritonServer, object]]:
    """Two servers on one copy of the fraud model, both keeping state in one Redis: (a, b, redis process)."""
    root = tmp_path_factory.mktemp("shared-repo")
    shutil.copytree(fraud_trained.path.parent, root / "fraud", ignore=shutil.ignore_patterns("state"))
    with running_redis(tmp_path_factory.mktemp("shared-redis")) as (url, proc):
        servers = [
            TritonServer(
                root,
                ports=ServerPorts.free(),
                models=["fraud"],
                log_path=root.parent / f"triton-{name}.log",
                env={ENV_VAR: url},
                cpus=cpus,  # a pinned server shares the state as any other
            )
            for name, cpus in (("a", frozenset({min(os.sched_getaffinity(0))})), ("b", None))
        ]
        with servers[0], servers[1]:
            yield servers[0], servers[1], proc


def _cpus(pid: int) -> set[int]:
    """The CPUs a process's every thread may run on."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= os.sched_getaffinity(int(task.name))
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def test_a_server_given_cpus_runs_triton_and_its_model_there(shared: tuple[TritonServer, TritonServer, object]) -> None:
    a, b, _ = shared
    assert a.process is not None and b.process is not None and a.cpus
    stubs = _children(a.process.pid)
    assert stubs, "the fraud model's stub is a child of Triton"
    for pid in [a.process.pid, *stubs]:
        assert _cpus(pid) == set(a.cpus)
    assert _cpus(b.process.pid) == os.sched_getaffinity(0)


def test_a_day_replayed_across_two_servers_equals_the_batch_kernels(
    shared: tuple[TritonServer, TritonServer, object],
    transactions: pl.DataFrame,
    fraud_split: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    a, b, _ = shared
    day = canonical(fraud_split[1], FRAUD_COLUMNS)
    got = []
    with FraudClient(a.grpc_url) as fa, FraudClient(b.grpc_url) as fb:
        for i, row in enumerate(day.iter_rows(named=True)):
            body = {
                "transaction_id": [row["transaction_id"]],
                "card_id": [row["card"]],
                "terminal_id": [row["terminal"]],
                "amount": [row["amount"]],
                "timestamp": [row["time"]],
            }
            got.append((fa, fb)[i % 2].authorize(body, features=True)["features"][0])
            if row["label"]:
                (fb, fa)[i % 2].report([row["transaction_id"]], [1])  # reported to the other server
    batch = transaction_features(canonical(transactions, FRAUD_COLUMNS).lazy(), delay_us=FRAUD_DELAY_US).collect()
    want = batch.tail(day.height).select(NAMES).to_numpy()
    x = np.vstack(got)
    assert len(x) == day.height > 100
    np.testing.assert_array_equal(x[:, COUNTS], want[:, COUNTS])
    np.testing.assert_allclose(x, want, rtol=1e-9, atol=1e-6)


def test_one_card_scored_through_both_servers_at_once_loses_nothing(
    shared: tuple[TritonServer, TritonServer, object],
) -> None:
    a, b, _ = shared
    n = 40

    def send(i: int) -> float:
        with FraudClient((a, b)[i % 2].grpc_url) as fraud:
            out = fraud.authorize(_auth(f"both-{i}", "shared-card", T0), features=True)
            return float(out["features"][0, COUNT_1H])

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = sorted(pool.map(send, range(n)))
    assert counts == list(range(1, n + 1))  # each saw every one recorded before it, on either server


def test_redis_going_away_fails_each_request_clearly_and_the_servers_stay_up(
    shared: tuple[TritonServer, TritonServer, object],
) -> None:
    a, b, proc = shared
    with FraudClient(a.grpc_url) as fraud:
        fraud.authorize(_auth("before-stop", "gone-card", T0 + 1))
        proc.terminate()  # type: ignore[attr-defined]
        proc.wait(10)  # type: ignore[attr-defined]
        with pytest.raises(ModelNotReadyError, match="fraud state in Redis at .* does not answer: start Redis"):
            fraud.authorize(_auth("after-stop", "gone-card", T0 + 2))
    for server in (a, b):
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        assert server.alive() and raw.is_server_live() and raw.is_model_ready("fraud")
