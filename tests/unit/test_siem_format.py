"""What ``scan --siem`` sends, without a collector: CEF with its escaping and key mapping, ECS JSON, RFC 5424
headers framed by octet counting, and ``--siem`` URLs checked into one sentence each (exit 2)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine.batch.scan.alerts import ALERT_SCHEMA, AlertFormat
from engine.batch.scan.follow import BatchFollower, Followers, stem
from engine.batch.scan.siem import SiemTarget
from engine.batch.scan.siem_format import cef_body, ecs_body, read_alerts, syslog_frame
from engine.cli import main
from engine.errors import UsageError
from tests.syslog_collectors import parse_cef

STARTED = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)


def _frame(**values: Any) -> pl.DataFrame:
    """One alert as a scan's batch holds it before writing."""
    row = {
        "file": "/logs/auth.log",
        "row": 41,
        "record_id": None,
        "source_ip": "203.0.113.7",
        "user_name": "root",
        "window_start": datetime(2024, 3, 4, 0, 30),
        "anomaly_score": 9.5,
        "top_features": ["failures", "invalid_users"],
        **values,
    }
    return pl.DataFrame({k: [v] for k, v in row.items()}, schema=ALERT_SCHEMA)


def _alert(model: str = "threat", threshold: float | None = 2.0, **values: Any) -> dict[str, Any]:
    """One alert as the alerts file holds it (rendered by the output's own code)."""
    fmt = AlertFormat(False, model, "3", threshold, STARTED)
    return json.loads(fmt.render(_frame(**values)).item(0, "line"))


def test_cef_maps_the_alert_into_standard_keys() -> None:
    header, ext = parse_cef(cef_body(_alert(), event_id="r1/u00000-b000002/0"))
    assert header[:6] == ["CEF:0", "finscore", "finscore", header[3], "finscore.threat", "finscore threat autoencoder"]
    assert header[3] and header[6] == "7"  # 9.5 is over twice the threshold of 2: medium 5, plus 2
    assert ext == {
        "rt": str(int(STARTED.timestamp() * 1000)),
        "start": str(int(datetime(2024, 3, 4, 0, 30, tzinfo=timezone.utc).timestamp() * 1000)),
        "src": "203.0.113.7",
        "suser": "root",
        "cfp1": "9.5",
        "cfp1Label": "anomalyScore",
        "cfp2": "2.0",
        "cfp2Label": "threshold",
        "cs1": "failures,invalid_users",
        "cs1Label": "topFeatures",
        "cs2": "/logs/auth.log",
        "cs2Label": "logFile",
        "cn1": "41",
        "cn1Label": "row",
        "cs4": "3",
        "cs4Label": "modelVersion",
        "externalId": "r1/u00000-b000002/0",
    }


def test_cef_escapes_pipes_backslashes_equal_signs_and_line_breaks() -> None:
    path, user = "/logs/a|b=c\\d\ne\rf.log", "bob=1\\x|y"
    line = cef_body(_alert(model="th|re\\at\nx", file=path, user_name=user, record_id="id=7"), event_id="r/b/0")
    assert "\n" not in line and "\r" not in line
    header, ext = parse_cef(line)
    assert header[4] == "finscore.th|re\\at x"  # a line break has no escape in a header: a space
    assert ext["cs2"] == path and ext["suser"] == user and ext["cs3"] == "id=7" and ext["cs3Label"] == "recordId"
    assert "cs2=/logs/a|b\\=c\\\\d\\ne\\rf.log " in line  # pipes stay as they are in an extension


@pytest.mark.parametrize(
    ("source", "keys"),
    [
        ("2001:db8::7", {"c6a2": "2001:db8::7", "c6a2Label": "sourceIPv6"}),
        ("tok_1_AbC", {"cs5": "tok_1_AbC", "cs5Label": "sourceAddress"}),  # tokenized by the guard: no address
        (None, {}),
    ],
)
def test_a_source_that_is_no_ipv4_address_keeps_src_free(source: str | None, keys: dict[str, str]) -> None:
    _, ext = parse_cef(cef_body(_alert(source_ip=source, user_name=None), event_id="r/b/0"))
    assert "src" not in ext and "suser" not in ext
    assert {k: v for k, v in ext.items() if k.startswith(("c6a2", "cs5"))} == keys


@pytest.mark.parametrize(
    ("score", "threshold", "severity"),
    [(2.0, 2.0, "5"), (3.9, 2.0, "5"), (4.0, 2.0, "6"), (1e9, 2.0, "10"), (5, None, "5")],
)
def test_cef_severity_grows_by_one_per_doubling_over_the_threshold(
    score: float, threshold: float | None, severity: str
) -> None:
    header, _ = parse_cef(cef_body(_alert(threshold=threshold, anomaly_score=score), event_id="r/b/0"))
    assert header[6] == severity


def test_ecs_is_the_alert_line_with_an_event_id() -> None:
    alert = _alert(user_name="zoë")
    body = ecs_body(alert, event_id="r1/u00001-b000000/3")
    sent = json.loads(body)
    assert sent["event"].pop("id") == "r1/u00001-b000000/3"
    assert sent == alert and "\n" not in body
    assert sent["event"]["kind"] == "alert" and sent["event"]["module"] == "finscore"
    assert sent["source"]["ip"] == "203.0.113.7" and sent["user"]["name"] == "zoë"


def test_a_syslog_message_is_rfc5424_framed_by_its_length_in_bytes() -> None:
    framed = syslog_frame("CEF:0|zoë", when=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc))
    length, _, message = framed.partition(b" ")
    assert int(length) == len(message) and message.endswith("CEF:0|zoë".encode())
    origin = rb'\[origin software="finscore" swVersion="[^"]+"\]'
    pattern = rb"<36>1 2024-05-01T12:00:00\.123456Z [!-~]{1,255} finscore \d+ alert " + origin + rb" CEF:0\|"
    assert re.match(pattern, message), message


def test_parquet_parts_read_back_as_the_json_lines_would(tmp_path: Path) -> None:
    frame = pl.concat([_frame(row=3), _frame(row=9, source_ip=None, window_start=None, top_features=[])])
    lines, flat = AlertFormat(False, "threat", "1", 2.0, STARTED), AlertFormat(True, "threat", "1", 2.0, STARTED)
    lines.write(frame, tmp_path / "p.jsonl")
    flat.write(frame, tmp_path / "p.parquet")
    assert read_alerts(tmp_path / "p.parquet", flat) == read_alerts(tmp_path / "p.jsonl", lines)
    assert [a["finscore"]["row"] for a in read_alerts(tmp_path / "p.jsonl", lines)] == [3, 9]


class _Taker(BatchFollower):
    def __init__(self, units: int) -> None:
        self.taken: list[str] = []
        super().__init__(units, name="test-taker")

    def take(self, name: str, held: object = None) -> None:
        self.taken.append(name)


def test_a_dask_scans_batches_are_replayed_in_checkpoint_order(tmp_path: Path) -> None:
    for unit, batch in [(2, 0), (0, 1), (0, 0)]:
        (tmp_path / f"{stem(unit, batch)}.done").write_text("{}")
    taker = _Taker(units=3)  # unit 1 had no batch
    Followers([taker, None]).replay(tmp_path)
    taker._thread.join(5)
    assert taker.taken == [stem(0, 0), stem(0, 1), stem(2, 0)]


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("syslog://127.0.0.1:514", "127.0.0.1", 514, False),
        ("syslogs://siem.example.org:6514", "siem.example.org", 6514, True),
        ("SYSLOG://[::1]:1514", "::1", 1514, False),
    ],
)
def test_siem_urls(url: str, host: str, port: int, tls: bool) -> None:
    target = SiemTarget.parse(url)
    assert (target.host, target.port, target.tls, target.body) == (host, port, tls, "cef")
    assert SiemTarget.parse(target.url) == target


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://x", "expected syslog://HOST:PORT (TCP) or syslogs://HOST:PORT (TLS), got http://"),
        ("siem.example.org:514", "got no scheme"),
        ("syslog://siem.example.org", "names no port"),
        ("syslog://:514", "names no host"),
        ("syslog://h:0", "from 1 to 65535"),
        ("syslog://h:70000", "from 1 to 65535"),
        ("syslog://h:port", "from 1 to 65535"),
        ("syslog://h:514/alerts", "nothing after the port"),
        ("syslog://alice:s3cret@h:514", "no user or password"),
    ],
)
def test_a_bad_siem_url_is_one_sentence(url: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        SiemTarget.parse(url)
    assert says in str(info.value) and "s3cret" not in str(info.value) and "\n" not in str(info.value)


def test_siem_companions_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--siem-format must be cef or ecs, got 'json'"):
        SiemTarget.parse("syslog://h:514", body="json")
    with pytest.raises(UsageError, match=r"--siem-ca applies to syslogs:// \(TLS\) only"):
        SiemTarget.parse("syslog://h:514", ca=tmp_path / "ca.pem")
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(UsageError, match="not a readable PEM certificate file"):
        SiemTarget.parse("syslogs://h:6514", ca=tmp_path / "ca.pem")
    with pytest.raises(UsageError, match="--siem-timeout must be 0 or more seconds"):
        SiemTarget.parse("syslog://h:514", timeout=-1)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--siem", "http://x"], "Error: --siem expected syslog://HOST:PORT"),
        (["--siem", "syslog://h:514", "--siem-format", "leef"], "Error: --siem-format must be cef or ecs"),
        (["--siem-format", "ecs"], "Error: --siem-format and --siem-ca apply only with --siem URL"),
    ],
)
def test_the_scan_command_refuses_bad_siem_flags_with_exit_2(
    flags: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["scan", str(tmp_path), "--out", str(tmp_path / "a.jsonl"), "--local", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(says) and err.count("\n") == 1
    assert not (tmp_path / "a.jsonl").exists()
