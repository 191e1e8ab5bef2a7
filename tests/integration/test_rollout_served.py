"""Rollout on the real bundled Triton: a second churn version shadowed beside the first, promoted under load with
no failed request, rolled back; each step in the audit log."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest
import tritonclient.grpc as grpcclient

from clients import ModelClient
from engine.cli import main
from engine.errors import InvalidInputError, NotFoundError
from engine.families.churn import ChurnTrainResult, train_churn
from engine.security.audit import AuditLog
from engine.security.trail import Trail
from engine.serving.repository import ModelRepository
from engine.serving.rollout import pin_config, promote, rollback, shadow
from engine.serving.server import ServerPorts, TritonServer
from tests.conftest import CHURN_ID, CHURN_LABEL


@pytest.fixture(scope="module")
def two_versions(trained: ChurnTrainResult, customers: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """A repository of its own holding churn version 1 (the session's) and version 2, trained on other rows."""
    root = tmp_path_factory.mktemp("rollout")
    repo = ModelRepository(root / "repo")
    shutil.copytree(trained.path.parent, repo.model_dir("churn"), symlinks=True)
    other = root / "other.parquet"
    customers.tail(1500).write_parquet(other)
    second = train_churn(other, label=CHURN_LABEL, id_column=CHURN_ID, repo=repo, threads=2)
    assert second.version == 2
    return repo


def test_shadow_promote_under_load_and_rollback(
    two_versions: ModelRepository, customers: pl.DataFrame, tmp_path: Path
) -> None:
    repo = two_versions
    trail = Trail(AuditLog(tmp_path / "audit.jsonl"), b"p" * 32)
    # Pinned to version 1 first, as a server running before version 2 was trained would serve.
    config = repo.model_dir("churn") / "config.pbtxt"
    config.write_text(pin_config(config.read_text(), 1))
    rows = customers.head(300)
    with TritonServer(repo, ports=ServerPorts.free(), models=["churn"], log_path=tmp_path / "triton.log") as server:
        url = server.grpc_url
        report = shadow(url, repo, "churn", 2, rows, trail=trail, latency_rows=20)
        assert report.serving == "1" and report.version == "2" and report.rows == 300
        assert 0.5 < report.correlation < 1.0  # trained on other rows: close, not the same
        assert set(report.latency_ms) == {"churn", "churn_shadow"}
        assert not (repo.root / "churn_shadow").exists()
        with grpcclient.InferenceServerClient(url) as raw:
            assert not raw.is_model_ready("churn_shadow")
            with ModelClient(url, "churn") as client:
                v1 = client.infer(rows)["churn_probability"]

            failures: list[BaseException] = []
            served = [0]
            stop = threading.Event()

            def load() -> None:
                with ModelClient(url, "churn") as client:
                    while not stop.is_set():
                        try:
                            client.infer(rows.head(4))
                            served[0] += 1
                        except BaseException as exc:  # noqa: BLE001 - every failure counts
                            failures.append(exc)

            workers = [threading.Thread(target=load) for _ in range(4)]
            for w in workers:
                w.start()
            try:
                done = promote(url, repo, "churn", 2, trail=trail)
            finally:
                stop.set()
                for w in workers:
                    w.join()
            assert failures == [] and served[0] > 0
            assert (done.before, done.version) == ("1", "2")
            with ModelClient(url, "churn") as client:
                v2 = client.infer(rows)["churn_probability"]
            assert (v2 != v1).any()
            back = rollback(url, repo, "churn", trail=trail)
            assert (back.before, back.version) == ("2", "1")
            with ModelClient(url, "churn") as client:
                assert (client.infer(rows)["churn_probability"] == v1).all()
            with pytest.raises(NotFoundError, match="no earlier version to roll back to"):
                rollback(url, repo, "churn", trail=trail)
            with pytest.raises(NotFoundError, match="has no version 7"):
                promote(url, repo, "churn", 7, trail=trail)
    steps = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(s["action"], s["version"], s["before"]) for s in steps] == [
        ("shadow", "2", "1"), ("promote", "2", "1"), ("rollback", "1", "2"),
    ]  # fmt: skip
    assert json.loads((repo.model_dir("churn") / "rollout.json").read_text())["served"] == ["1"]


def test_a_version_whose_tensors_differ_from_the_config_is_refused(two_versions: ModelRepository) -> None:
    config = two_versions.model_dir("churn") / "config.pbtxt"
    before = config.read_text()
    try:
        config.write_text(before.replace('name: "age"', 'name: "years"'))
        with pytest.raises(InvalidInputError, match="other tensors than the model's config.*age, years"):
            promote("127.0.0.1:1", two_versions, "churn", 1, trail=Trail(AuditLog("/dev/null"), b"p" * 32))
    finally:
        config.write_text(before)


def test_the_command_names_a_missing_sample(two_versions: ModelRepository, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["rollout", "shadow", "churn", "2", "--sample", "--repo", str(two_versions.root), "--url", "127.0.0.1:1"]
    )
    assert code == 1 and capsys.readouterr().err.startswith("Error: ")
