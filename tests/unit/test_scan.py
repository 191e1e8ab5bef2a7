"""Bulk scans in-process and on Dask: alerts equal the scorer's verdicts, bad rows are counted, and an
interrupted or killed scan resumes to exactly the alerts of an uninterrupted one."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.batch.scan import LocalSpec, scan
from engine.batch.scan.backends import open_backend
from engine.errors import DataFileError, InvalidInputError
from engine.families.threat import ThreatScorer, train_threat
from engine.families.threat.train import ThreatTrainResult
from engine.serving.repository import ModelRepository
from tests.conftest import read_alerts


@pytest.fixture(scope="module")
def scan_inputs(tmp_path_factory: pytest.TempPathFactory, events: pl.DataFrame) -> tuple[Path, int]:
    """A folder with a Parquet file of several row groups and a CSV file with two bad rows."""
    d = tmp_path_factory.mktemp("scan_in")
    events.head(3000).write_parquet(d / "a.parquet", row_group_size=700)
    csv = events.slice(3000, 1000).with_columns(pl.all().cast(pl.String))
    csv = csv.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("lots")).otherwise(pl.col("bytes_in")).alias("bytes_in"),
        pl.when(pl.int_range(pl.len()) == 9).then(pl.lit("inf")).otherwise(pl.col("hour")).alias("hour"),
    )
    csv.write_csv(d / "b.csv")
    (d / "notes.txt").write_text("not scanned", encoding="utf-8")
    return d, 4000


@pytest.fixture(scope="module")
def spec(threat_trained: ThreatTrainResult) -> LocalSpec:
    return LocalSpec(str(threat_trained.path), threads=1)


@pytest.fixture(scope="module")
def reference(scan_inputs: tuple[Path, int], spec: LocalSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scan_ref") / "alerts.jsonl"
    scan([scan_inputs[0]], out, spec=spec, batch_rows=500, progress=False)
    return out


def test_alerts_are_the_rows_the_scorer_flags(
    reference: Path, scan_inputs: tuple[Path, int], threat_scorer: ThreatScorer, events: pl.DataFrame
) -> None:
    alerts = read_alerts(reference)
    by_file: dict[str, set[int]] = {}
    for a in alerts:
        assert a["event"]["kind"] == "alert" and a["event"]["category"] == ["intrusion_detection"]
        assert a["finscore"]["anomaly_score"] >= a["finscore"]["threshold"]
        by_file.setdefault(Path(a["log"]["file"]["path"]).name, set()).add(a["finscore"]["row"])
    expected = threat_scorer.score_frame(events.head(3000))["is_threat"]
    assert by_file["a.parquet"] == set(np.flatnonzero(expected).tolist())
    expected_csv = set(np.flatnonzero(threat_scorer.score_frame(events.slice(3000, 1000))["is_threat"]).tolist())
    assert by_file.get("b.csv", set()) == expected_csv - {5, 9}
    ids = {a["finscore"]["record_id"] for a in alerts if a["log"]["file"]["path"].endswith("a.parquet")}
    assert ids == {str(i) for i in events.head(3000).filter(pl.Series(expected)).get_column("event_id")}


def test_every_row_is_scored_or_reported(reference: Path, scan_inputs: tuple[Path, int]) -> None:
    summary = json.loads(reference.with_name("alerts.summary.json").read_text(encoding="utf-8"))
    assert summary["rows_read"] == scan_inputs[1] == summary["scored"] + summary["rejected"]
    assert summary["rejected"] == 2 and summary["files"] == 2
    rejects = pl.read_csv(reference.with_name("alerts.rejected.csv"))
    assert rejects.select("row", "column").rows() == [(5, "bytes_in"), (9, "hour")]
    assert summary["alerts"] == len(read_alerts(reference))
    assert not (reference.parent / ".alerts.jsonl.scan").exists()


def test_parquet_output_holds_the_same_alerts(
    reference: Path, scan_inputs: tuple[Path, int], spec: LocalSpec, tmp_path: Path
) -> None:
    scan([scan_inputs[0]], tmp_path / "alerts.parquet", spec=spec, batch_rows=500, progress=False)
    flat = pl.read_parquet(tmp_path / "alerts.parquet")
    assert flat.select("row").to_series().to_list() == [a["finscore"]["row"] for a in read_alerts(reference)]
    assert flat.columns[:3] == ["file", "row", "record_id"]


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, spec: LocalSpec, calls: int) -> None:
    backend = open_backend(spec)
    real = backend.score
    numbers = itertools.count(1)  # units run on two threads: number the calls as they start

    def flaky(frame: pl.DataFrame):  # type: ignore[no-untyped-def]
        if next(numbers) > calls:
            raise KeyboardInterrupt
        return real(frame)

    monkeypatch.setattr(backend, "score", flaky)


def test_interrupted_scan_resumes_to_the_same_alerts(
    reference: Path, scan_inputs: tuple[Path, int], spec: LocalSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "alerts.jsonl"
    with monkeypatch.context() as m:
        _interrupt_after(m, spec, 4)
        with pytest.raises(KeyboardInterrupt):
            scan([scan_inputs[0]], out, spec=spec, batch_rows=500, progress=False)
    assert not out.exists()
    assert len(list((tmp_path / ".alerts.jsonl.scan").glob("*.done"))) == 4
    summary = scan([scan_inputs[0]], out, spec=spec, batch_rows=500, progress=False)
    assert summary.resumed_batches == 4
    assert summary.rows_this_run < summary.rows_read == scan_inputs[1]
    assert read_alerts(out) == read_alerts(reference)
    assert pl.read_csv(out.with_name("alerts.rejected.csv")).height == 2


def test_changed_inputs_start_over(scan_inputs: tuple[Path, int], spec: LocalSpec, tmp_path: Path) -> None:
    data = tmp_path / "in.parquet"
    pl.read_parquet(scan_inputs[0] / "a.parquet").write_parquet(data)
    out = tmp_path / "alerts.jsonl"
    state = tmp_path / ".alerts.jsonl.scan"
    with pytest.MonkeyPatch.context() as m:
        _interrupt_after(m, spec, 1)
        with pytest.raises(KeyboardInterrupt):
            scan([data], out, spec=spec, batch_rows=500, progress=False)
    assert state.is_dir()
    pl.read_parquet(data).head(100).write_parquet(data)  # the input changed since the checkpoint
    summary = scan([data], out, spec=spec, batch_rows=500, progress=False)
    assert summary.resumed_batches == 0 and summary.rows_read == 100


def test_killed_scan_reruns_to_the_same_alerts(
    reference: Path, scan_inputs: tuple[Path, int], spec: LocalSpec, tmp_path: Path
) -> None:
    out = tmp_path / "alerts.jsonl"
    # A real SIGKILL in the middle of the third batch, after its alerts part may already be on disk.
    script = textwrap.dedent(
        f"""
        import itertools, os, signal
        from engine.batch.scan import LocalSpec, scan
        from engine.batch.scan.backends import open_backend
        spec = LocalSpec({spec.version_dir!r}, threads=1)
        backend = open_backend(spec)
        real, calls = backend.score, itertools.count(1)
        def score(frame):
            n = next(calls)  # units run on two threads: number the calls as they start
            result = real(frame)
            if n == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        backend.score = score
        scan([{str(scan_inputs[0])!r}], {str(out)!r}, spec=spec, batch_rows=500, progress=False)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert not out.exists()
    rerun = subprocess.run(
        [sys.executable, "-m", "engine.cli", "scan", str(scan_inputs[0]), "--out", str(out), "--local"]
        + ["--repo", str(Path(spec.version_dir).parent.parent), "--batch-rows", "500", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    resumed = re.search(r"resumed: (\d+) batches were already done", rerun.stdout)
    assert resumed is not None and 1 <= int(resumed.group(1)) < 8, rerun.stdout
    assert read_alerts(out) == read_alerts(reference)


def test_dask_scan_writes_the_same_alerts(
    reference: Path, scan_inputs: tuple[Path, int], spec: LocalSpec, tmp_path: Path
) -> None:
    from distributed import LocalCluster

    out = tmp_path / "alerts.jsonl"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = scan([scan_inputs[0]], out, spec=spec, batch_rows=500, dask=cluster.scheduler_address, progress=False)
    assert summary.rows_read == scan_inputs[1] and summary.rejected == 2
    assert read_alerts(out) == read_alerts(reference)


def test_a_dask_scheduler_that_is_not_there_is_one_sentence(
    scan_inputs: tuple[Path, int], spec: LocalSpec, tmp_path: Path
) -> None:
    from engine.errors import ServerUnavailableError
    from engine.serving.server import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnavailableError, match=f"no Dask scheduler answers at {address}"):
        scan([scan_inputs[0]], tmp_path / "a.jsonl", spec=spec, dask=address, progress=False)


def test_bad_inputs_fail_before_anything_is_written(spec: LocalSpec, events: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    events.drop("service").head(10).write_parquet(tmp_path / "short.parquet")
    with pytest.raises(DataFileError, match="missing column 'service' required by the model"):
        scan([tmp_path / "short.parquet"], out, spec=spec, progress=False)
    from engine.demo.authlog import write_ssh_auth_log

    write_ssh_auth_log(tmp_path / "auth.log", 300, seed=1)
    with pytest.raises(DataFileError, match=r"auth.log \(auth-log windows\): missing columns 'protocol'"):
        scan([tmp_path / "auth.log"], out, spec=spec, progress=False)
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataFileError, match="unsupported file type '.json'"):
        scan([tmp_path / "x.json"], out, spec=spec, progress=False)
    with pytest.raises(InvalidInputError, match="written as .jsonl .* or .parquet, not '.csv'"):
        scan([tmp_path / "short.parquet"], tmp_path / "alerts.csv", spec=spec, progress=False)
    with pytest.raises(InvalidInputError, match="is a folder"):
        (tmp_path / "dir.jsonl").mkdir()
        scan([tmp_path / "short.parquet"], tmp_path / "dir.jsonl", spec=spec, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFileError, match="holds no .parquet, .csv or .log file"):
        scan([empty], out, spec=spec, progress=False)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataFileError, match="cannot be read as PARQUET"):
        scan([tmp_path / "broken.parquet"], out, spec=spec, progress=False)
    assert not out.exists() and not (tmp_path / ".alerts.jsonl.scan").exists()


def test_auth_log_scan_flags_the_attackers(tmp_path: Path) -> None:
    from engine.demo.authlog import write_ssh_auth_log

    log = tmp_path / "auth.log"
    attackers = write_ssh_auth_log(log, 12_000, seed=4)
    trained = train_threat(log, repo=ModelRepository(tmp_path / "repo"), threads=1)
    assert "source_ip" in trained.schema.excluded and "failures" in trained.schema.names
    out = tmp_path / "alerts.jsonl"
    summary = scan([log], out, spec=LocalSpec(str(trained.path)), progress=False)
    assert summary.log_lines == 12_000
    flagged = {a["source"]["ip"] for a in read_alerts(out)}
    assert attackers and flagged
    # Most attackers are caught, and attackers are over-represented among the flagged addresses.
    assert len(flagged & attackers) >= 0.6 * len(attackers)
    assert len(flagged & attackers) / len(flagged) > 0.3
    assert all(a["event"]["start"] for a in read_alerts(out))


def test_auth_log_scan_per_user(tmp_path: Path) -> None:
    from engine.demo.authlog import write_ssh_auth_log

    log = tmp_path / "auth.log"
    write_ssh_auth_log(log, 12_000, seed=6)
    trained = train_threat(log, entity="user", every="30m", repo=ModelRepository(tmp_path / "repo"), threads=1)
    assert "distinct_sources" in trained.schema.names and "user" in trained.schema.excluded
    out = tmp_path / "alerts.jsonl"
    scan([log], out, spec=LocalSpec(str(trained.path)), entity="user", every="30m", progress=False)
    alerts = read_alerts(out)
    assert alerts and all(a["user"]["name"] and "source" not in a for a in alerts)
    # The windows scanned are the ones trained on: the same model over source-IP windows is refused.
    with pytest.raises(DataFileError, match="missing column 'distinct_sources'"):
        scan([log], tmp_path / "ip.jsonl", spec=LocalSpec(str(trained.path)), progress=False)


@pytest.mark.parametrize("subject", [False, True])
def test_a_units_file_is_guarded_once_as_each_alert_would_be(subject: bool) -> None:
    from engine.batch.scan.run import CARRIED, SUBJECTS, _guard_file, _guarded
    from engine.security.guard import OutputGuard

    guard = OutputGuard.build(CARRIED, **({"subject": SUBJECTS, "pseudonym_key": b"k" * 32} if subject else {}))
    path = "/logs/4111 1111 1111 1111/events.parquet"  # a card number in a path is masked like any other
    alerts = pl.DataFrame(
        {
            "file": [path] * 3,
            "row": [1, 5, 9],
            "record_id": ["a", None, "5500 0000 0000 0004"],
            "source_ip": ["10.0.0.1", None, None],
            "user_name": [None, "root", None],
        }
    )
    once = _guarded(guard, alerts, _guard_file(guard, path))
    assert once.equals(guard.apply(alerts))
    assert "4111 1111 1111 1111" not in once.get_column("file")[0]
    assert _guarded(guard, alerts.clear(), _guard_file(guard, path)).equals(guard.apply(alerts.clear()))


@pytest.mark.parametrize(
    ("asked", "most", "rows"),
    [(None, 32768, 32768), (None, 0, 8192), (300, 32768, 300), (32768, 32768, 32768), (50000, 0, 50000)],
)
def test_rows_per_request_are_the_models_most_unless_asked(asked: int | None, most: int, rows: int) -> None:
    from engine.batch.scan.backends import _request_rows

    assert _request_rows(asked, most, "threat") == rows


@pytest.mark.parametrize(
    ("asked", "most", "says"), [(40000, 32768, "1 to 32768, its max batch size"), (0, 0, "at least 1")]
)
def test_rows_per_request_the_model_cannot_take_are_refused(asked: int, most: int, says: str) -> None:
    from engine.batch.scan.backends import _request_rows
    from engine.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=f"{asked} rows per request .* model 'threat' takes: {says}"):
        _request_rows(asked, most, "threat")
