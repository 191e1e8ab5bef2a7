from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from engine.cli import main
from engine.errors import ModelNotReadyError, PortInUseError, UsageError
from engine.serving.server import ServerPorts, TritonServer, parse_cpus


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_data_then_train_then_local_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "c.csv"
    assert run(capsys, "demo-data", "churn", "--rows", "800", "--out", str(data))[0] == 0
    code, out, _ = run(
        capsys, "train", "churn", "--data", str(data), "--label", "churned", "--repo", str(tmp_path / "r")
    )
    assert code == 0
    for figure in ("ROC-AUC", "PR-AUC", "Brier score", "precision / recall / F1", "top-decile lift"):
        assert figure in out
    assert "customer_id (id-like" in out
    code, out, _ = run(
        capsys,
        "score",
        "churn",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "s.csv"),
        "--local",
        "--repo",
        str(tmp_path / "r"),
        "--no-progress",
    )
    assert code == 0 and "scored 800" in out
    assert pl.read_csv(tmp_path / "s.csv").height == 800


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "churn", "--data", "/nonexistent.csv", "--label", "y"], "no such file"),
        (["score", "churn", "--data", "x.csv", "--out", "o.csv", "--request-rows", "9999"], "between 1 and 4096"),
        (["serve", "--repo", "/nonexistent-repo"], "does not exist"),
    ],
)
def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code in (1, 2)
    assert err.startswith("Error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_wrong_label_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "c.parquet"
    main(["demo-data", "churn", "--rows", "100", "--out", str(data)])
    code, _, err = run(capsys, "train", "churn", "--data", str(data), "--label", "Churn", "--repo", str(tmp_path))
    assert code == 1 and "label column 'Churn' is not in the table" in err


def test_server_refuses_empty_repository(tmp_path: Path) -> None:
    (tmp_path / "churn").mkdir()
    with pytest.raises(ModelNotReadyError, match="has no trained model"):
        TritonServer(tmp_path).start()


def test_server_refuses_a_taken_port(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        server = TritonServer(trained.path.parent.parent, ports=replace(ServerPorts.free(), http=taken))
        with pytest.raises(PortInUseError, match=f"port {taken} \\(HTTP\\).*--http-port"):
            server.start()
        assert server.process is None


def test_cpus_are_read_as_taskset_writes_them() -> None:
    first = min(os.sched_getaffinity(0))
    assert parse_cpus(str(first)) == {first}
    assert parse_cpus(f"{first}-{first}, {first}") == {first}
    for bad in ("", "a", "1-0", "0-", "-1", "0;1"):
        with pytest.raises(UsageError, match="as taskset writes them"):
            parse_cpus(bad)
    with pytest.raises(UsageError, match="CPU 4096 is not one this machine lets finscore run on"):
        parse_cpus("4096")


def test_serve_refuses_cpus_it_cannot_run_on(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "--cpus", "4096")
    assert code == 2 and "CPU 4096 is not one this machine lets finscore run on" in err and err.count("\n") == 1


def test_free_ports_are_distinct_and_equal_ports_are_refused(trained) -> None:  # type: ignore[no-untyped-def]
    for _ in range(20):
        p = ServerPorts.free()
        assert len({p.grpc, p.http, p.metrics}) == 3
    with pytest.raises(PortInUseError, match="must differ"):
        TritonServer(trained.path.parent.parent, ports=ServerPorts(9100, 9100, 9102)).start()
