"""``scan --siem``: alerts forwarded while a scan runs, to a real rsyslog (started by each test on a free port,
skipped with the reason where it is not installed) and to a collector in Python for a reset in the middle of
a batch and for TLS.

The rule they check (:mod:`engine.batch.scan.siem`): every alert reaches the collector at least once, and a
message is sent twice only when its batch was on the wire when the connection failed; a collector that stays
down costs the scan nothing but exit 1 and one sentence, and a rerun sends only the batches still missing.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import engine.batch.scan.siem as siem_module
from engine.batch.scan import LocalSpec, ScanSummary, SiemTarget, scan
from engine.batch.scan.follow import stem
from engine.batch.scan.run import CARRIED
from engine.cli import main
from engine.security.guard import OutputGuard
from engine.security.protect import KeyRing
from tests.syslog_collectors import FakeCollector, Rsyslog, parse_cef
from tests.tls_certs import Authority

#: Auth-log windows per batch: the log below makes about 1,800 windows, so 9 batches, 8 of them with alerts.
BATCH_ROWS = 200


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated OpenSSH auth log and a model repository with a threat model trained on it."""
    from engine.demo.authlog import write_ssh_auth_log
    from engine.families.threat import train_threat
    from engine.serving.repository import ModelRepository

    d = tmp_path_factory.mktemp("siem_in")
    write_ssh_auth_log(d / "auth.log", 6000, seed=4)
    train_threat(d / "auth.log", repo=ModelRepository(d / "repo"), threads=1)
    return d / "auth.log", d / "repo"


@pytest.fixture(scope="module")
def spec(auth: tuple[Path, Path]) -> LocalSpec:
    from engine.serving.repository import ModelRepository

    return LocalSpec(str(ModelRepository(auth[1]).latest("threat")), threads=1)


def _scan(auth: tuple[Path, Path], spec: LocalSpec, out: Path, target: SiemTarget, **kwargs: Any) -> ScanSummary:
    return scan([auth[0]], out, spec=spec, batch_rows=BATCH_ROWS, progress=False, siem=target, **kwargs)


def _alerts(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def _of_alert(a: dict[str, Any]) -> tuple[str, int, float, list[str], str | None]:
    """What a SIEM must learn of an alert: file, row, score, reasons, source address."""
    own = a["finscore"]
    return a["log"]["file"]["path"], own["row"], own["anomaly_score"], own["top_features"], a["source"]["ip"]


def _of_cef(line: str) -> tuple[str, int, float, list[str], str | None]:
    header, ext = parse_cef(line)
    assert header[:3] == ["CEF:0", "finscore", "finscore"] and header[4] == "finscore.threat"
    assert 5 <= int(header[6]) <= 10
    return ext["cs2"], int(ext["cn1"]), float(ext["cfp1"]), ext["cs1"].split(","), ext.get("src")


def _ids(lines: list[str]) -> list[str]:
    return [parse_cef(line)[1]["externalId"] for line in lines]


@pytest.mark.parametrize("body", ["cef", "ecs"])
def test_rsyslog_receives_exactly_the_alerts_file(
    body: str, auth: tuple[Path, Path], spec: LocalSpec, tmp_path: Path
) -> None:
    collector = Rsyslog(tmp_path).start()
    try:
        out = tmp_path / "alerts.jsonl"
        summary = _scan(auth, spec, out, SiemTarget.parse(f"syslog://127.0.0.1:{collector.port}", body=body))
        alerts = _alerts(out)
        got = collector.wait_for(len(alerts))
    finally:
        collector.stop()
    assert summary.alerts == summary.forwarded == len(alerts) > 9 and summary.unforwarded_batches == 0
    assert len(got) == len(alerts)  # each once, in the file's order
    if body == "cef":
        assert [_of_cef(line) for line in got] == [_of_alert(a) for a in alerts]
        ids = _ids(got)
    else:
        sent = [json.loads(line) for line in got]
        ids = [s["event"].pop("id") for s in sent]
        assert sent == alerts
    # Alert ids name the batch (one unit here: the log) and the alert's place in it, once each.
    assert [i.split("/")[1] for i in ids] == [stem(0, a["finscore"]["row"] // BATCH_ROWS) for a in alerts]
    assert len(set(ids)) == len(ids) == len(alerts)
    assert f"{len(alerts)} alerts forwarded to syslog://127.0.0.1:{collector.port}" in summary.line()
    assert not list(tmp_path.glob(".*.scan"))


def test_a_collector_restarted_mid_scan_still_gets_every_alert_once(
    auth: tuple[Path, Path], spec: LocalSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Rsyslog(tmp_path).start()
    restarted = threading.Event()
    seen: list[bool] = []  # per forwarded batch: was the collector back by then

    def restart() -> None:
        time.sleep(0.5)  # the forwarder meets a closed port a few times, backing off
        collector.start()
        restarted.set()

    def stop_after_the_second_batch(name: str) -> None:
        seen.append(restarted.is_set())
        if len(seen) == 2:
            collector.stop()  # between two batches: none is on the wire
            threading.Thread(target=restart, daemon=True).start()

    monkeypatch.setattr(siem_module, "_sent", stop_after_the_second_batch)
    try:
        out = tmp_path / "alerts.jsonl"
        summary = _scan(auth, spec, out, SiemTarget.parse(f"syslog://127.0.0.1:{collector.port}", timeout=20))
        alerts = _alerts(out)
        got = collector.wait_for(len(alerts))
    finally:
        collector.stop()
    assert seen == [False, False] + [True] * 7, "the third batch should have waited for the collector"
    assert summary.forwarded == len(alerts) and summary.unforwarded_batches == 0
    # The failure met no batch on the wire, so the rule promises each alert exactly once.
    assert [_of_cef(line) for line in got] == [_of_alert(a) for a in alerts]


def test_a_connection_reset_in_the_middle_of_a_batch_resends_that_batch_only(
    auth: tuple[Path, Path], spec: LocalSpec, tmp_path: Path
) -> None:
    collector = FakeCollector(reset=(3, 1))  # the third batch's connection dies after its first message
    try:
        out = tmp_path / "alerts.jsonl"
        summary = _scan(auth, spec, out, SiemTarget.parse(f"syslog://127.0.0.1:{collector.port}"))
    finally:
        collector.close()
    alerts = [_of_alert(a) for a in _alerts(out)]
    ids = _ids(collector.messages)
    batches = list(dict.fromkeys(i.split("/")[1] for i in ids))
    third = [n for n, i in enumerate(ids) if i.split("/")[1] == batches[2]][0]
    # Batches 1 and 2, the first message of batch 3 (read before the reset), then batch 3 whole, and the rest.
    assert [_of_cef(m) for m in collector.messages] == [*alerts[: third + 1], *alerts[third:]]
    counts = Counter(ids)
    assert ids[third].endswith(f"/{batches[2]}/0") and counts[ids[third]] == 2
    assert [i for i, n in counts.items() if n > 1] == [ids[third]]  # one duplicate: what was read before the reset
    assert collector.connections == len(batches) + 1 and summary.forwarded == summary.alerts == len(alerts)


def test_tls_to_a_collector_the_given_ca_signed(auth: tuple[Path, Path], spec: LocalSpec, tmp_path: Path) -> None:
    bank, rogue = Authority(tmp_path, "bank"), Authority(tmp_path, "rogue")
    pair = bank.issue("siem", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    collector = FakeCollector(tls=context)
    try:
        url = f"syslogs://127.0.0.1:{collector.port}"
        summary = _scan(auth, spec, tmp_path / "alerts.jsonl", SiemTarget.parse(url, ca=bank.ca))
        assert [_of_cef(m) for m in collector.messages] == [_of_alert(a) for a in _alerts(tmp_path / "alerts.jsonl")]
        assert summary.unforwarded_batches == 0
        # A collector whose certificate the trusted CA did not sign gets nothing.
        before = len(collector.messages)
        refused = _scan(auth, spec, tmp_path / "again.jsonl", SiemTarget.parse(url, ca=rogue.ca, timeout=0.3))
    finally:
        collector.close()
    assert len(collector.messages) == before and refused.unforwarded_batches == 9 and refused.forwarded == 0
    assert "(TLS: CERTIFICATE_VERIFY_FAILED): 9 batches of alerts were not forwarded" in refused.siem_problem
    assert (tmp_path / "again.jsonl").is_file()


def test_no_raw_value_the_guard_tokenizes_is_sent(auth: tuple[Path, Path], spec: LocalSpec, tmp_path: Path) -> None:
    guard = OutputGuard.build(CARRIED, tokenize=["source_ip"], keys=KeyRing({1: os.urandom(32)}))
    collector = FakeCollector()
    try:
        out = tmp_path / "alerts.jsonl"
        _scan(auth, spec, out, SiemTarget.parse(f"syslog://127.0.0.1:{collector.port}"), guard=guard)
    finally:
        collector.close()
    tokens = [a["source"]["ip"] for a in _alerts(out)]
    assert tokens and collector.messages
    assert [parse_cef(m)[1]["cs5"] for m in collector.messages] == tokens  # as the alerts file holds them
    assert not any(re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", m) for m in collector.messages)


def test_a_collector_that_never_comes_back_is_one_sentence_and_a_rerun_sends_the_rest(
    auth: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    audit: Path,
) -> None:
    collector = Rsyslog(tmp_path).start()
    forwarded: list[str] = []

    def stop_for_good_after_two(name: str) -> None:
        forwarded.append(name)
        if len(forwarded) == 2:
            collector.stop()

    out = tmp_path / "alerts.jsonl"
    url = f"syslog://127.0.0.1:{collector.port}"
    argv = ["scan", str(auth[0]), "--out", str(out), "--local", "--repo", str(auth[1]), "--no-progress"]
    argv += ["--batch-rows", str(BATCH_ROWS), "--siem", url, "--siem-timeout", "0.5"]
    try:
        with monkeypatch.context() as m:
            m.setattr(siem_module, "_sent", stop_for_good_after_two)
            assert main(argv) == 1
        err = capsys.readouterr().err
        assert err == (
            f"Error: the SIEM collector at {url} did not answer for 0.5 s after the scan (Connection refused): "
            "7 batches of alerts were not forwarded; the alerts file is complete, and running the same command "
            "again sends only what is missing\n"
        )
        alerts = _alerts(out)  # written in full all the same
        first = collector.lines()
        assert [_of_cef(line) for line in first] == [_of_alert(a) for a in alerts[: len(first)]]
        assert {i.split("/")[1] for i in _ids(first)} == set(forwarded)
        assert (tmp_path / ".alerts.jsonl.scan").is_dir()

        collector.start()
        assert main(argv) == 0
        got = collector.wait_for(len(alerts))
    finally:
        collector.stop()
    printed = capsys.readouterr()
    assert printed.err == "" and f"{len(alerts) - len(first)} alerts forwarded to {url}" in printed.out
    assert [_of_cef(line) for line in got] == [_of_alert(a) for a in alerts]  # the rest, each once
    assert _alerts(out) == alerts and not (tmp_path / ".alerts.jsonl.scan").exists()
    runs = [r for r in map(json.loads, audit.read_text(encoding="utf-8").splitlines()) if r["event"] == "run"]
    assert len(runs) == 1 and runs[0]["alerts"] == len(alerts)  # the rerun closed no second run


def test_a_dask_scan_to_parquet_forwards_what_its_file_holds(
    auth: tuple[Path, Path], spec: LocalSpec, tmp_path: Path
) -> None:
    import polars as pl
    from distributed import LocalCluster

    collector = FakeCollector()
    try:
        target = SiemTarget.parse(f"syslog://127.0.0.1:{collector.port}", body="ecs")
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
            summary = _scan(auth, spec, tmp_path / "alerts.parquet", target, dask=cluster.scheduler_address)
    finally:
        collector.close()
    flat = pl.read_parquet(tmp_path / "alerts.parquet")
    sent = [json.loads(m) for m in collector.messages]
    assert summary.forwarded == flat.height == len(sent) > 0
    assert [_of_alert(a) for a in sent] == list(
        flat.select("file", "row", "anomaly_score", "top_features", "source_ip").iter_rows()
    )
