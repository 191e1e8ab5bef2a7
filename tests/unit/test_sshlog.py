"""OpenSSH auth logs: parsing every line kind, windows per source or user, and hostile files.

Over ~400 lines: one test file per reader, and the auth-log reader has many line kinds to prove."""

from __future__ import annotations

import math
import os
import random
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.demo.authlog import ssh_auth_log, write_ssh_auth_log
from engine.device import gpu_available
from engine.errors import DataFileError, InvalidInputError, UnsupportedOnGPU
from engine.families.threat.authlog import is_auth_log, read_auth_log
from kernels.sshlog import (
    EVENTS,
    FEATURES,
    entity_features,
    parse_auth_lines,
    window_features,
    window_features_ref,
)

HEAD = "Mar  4 10:00:01 gw1 sshd[4242]: "
PAM = "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost="

# (message after the syslog header, event, user, invalid_user, source_ip, port); addresses from the
# documentation ranges, names made up.
# fmt: off
CASES = [
    ("Failed password for root from 203.0.113.5 port 40022 ssh2",
     "failed_password", "root", False, "203.0.113.5", 40022),
    ("Failed password for invalid user kiosk from 192.0.2.44 port 51234 ssh2",
     "failed_password", "kiosk", True, "192.0.2.44", 51234),
    ("message repeated 3 times: [ Failed password for root from 203.0.113.5 port 40022 ssh2]",
     "failed_password", "root", False, "203.0.113.5", 40022),
    ("Failed keyboard-interactive/pam for mia from 198.51.100.9 port 50001 ssh2",
     "failed_password", "mia", False, "198.51.100.9", 50001),
    ("Failed none for invalid user scanner from 192.0.2.45 port 60001 ssh2",
     "failed_other", "scanner", True, "192.0.2.45", 60001),
    ("Failed publickey for mia from 198.51.100.9 port 50002 ssh2: RSA SHA256:xyz",
     "failed_other", "mia", False, "198.51.100.9", 50002),
    ("Accepted password for alice from 198.51.100.20 port 50111 ssh2",
     "accepted_password", "alice", False, "198.51.100.20", 50111),
    ("Accepted publickey for bob from 198.51.100.21 port 50222 ssh2: ED25519 SHA256:abc+/d",
     "accepted_publickey", "bob", False, "198.51.100.21", 50222),
    ("Invalid user kiosk from 192.0.2.44", "invalid_user", "kiosk", True, "192.0.2.44", None),
    ("Invalid user kiosk from 192.0.2.44 port 51234", "invalid_user", "kiosk", True, "192.0.2.44", 51234),
    ("Invalid user  0042 from 192.0.2.46", "invalid_user", " 0042", True, "192.0.2.46", None),
    ("Invalid user john smith from 192.0.2.47", "invalid_user", "john smith", True, "192.0.2.47", None),
    ("input_userauth_request: invalid user kiosk [preauth]", "invalid_user", "kiosk", True, None, None),
    ("pam_unix(sshd:auth): check pass; user unknown", "invalid_user", None, True, None, None),
    (PAM + "203.0.113.5  user=root", "auth_failure", "root", False, "203.0.113.5", None),
    (PAM + "203.0.113.5 ", "auth_failure", None, False, "203.0.113.5", None),
    (PAM + "203.0.113.5.dsl.example.net  user=root", "auth_failure", "root", False, None, None),
    ("PAM 4 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root",
     "auth_failure", "root", False, "203.0.113.5", None),
    ("reverse mapping checking getaddrinfo for dsl-7.example.org [192.0.2.99] failed - POSSIBLE BREAK-IN ATTEMPT!",
     "break_in_attempt", None, False, "192.0.2.99", None),
    ("Address 192.0.2.98 maps to mail.example.org, but this does not map back to the address - "
     "POSSIBLE BREAK-IN ATTEMPT!",
     "break_in_attempt", None, False, "192.0.2.98", None),
    ("Received disconnect from 203.0.113.5: 11: Bye Bye [preauth]", "disconnect", None, False, "203.0.113.5", None),
    ("error: Received disconnect from 203.0.113.6: 3: com.example.Client: Auth fail [preauth]",
     "disconnect", None, False, "203.0.113.6", None),
    ("Received disconnect from 203.0.113.7 port 40100:11: Bye Bye [preauth]",
     "disconnect", None, False, "203.0.113.7", 40100),
    ("Disconnected from invalid user kiosk 192.0.2.44 port 51234 [preauth]",
     "disconnect", "kiosk", True, "192.0.2.44", 51234),
    ("Disconnected from user alice 198.51.100.20 port 50111", "disconnect", "alice", False, "198.51.100.20", 50111),
    ("Disconnecting: Too many authentication failures for root [preauth]", "disconnect", "root", False, None, None),
    ("Connection closed by 203.0.113.8 [preauth]", "connection_closed", None, False, "203.0.113.8", None),
    ("Connection closed by authenticating user root 203.0.113.8 port 40200 [preauth]",
     "connection_closed", "root", False, "203.0.113.8", 40200),
    ("Connection reset by 203.0.113.9 port 40300", "connection_closed", None, False, "203.0.113.9", 40300),
    ("Did not receive identification string from 192.0.2.50", "probe", None, False, "192.0.2.50", None),
    ("Unable to negotiate with 192.0.2.51 port 40400: no matching key exchange method found.",
     "probe", None, False, "192.0.2.51", 40400),
    ("pam_unix(sshd:session): session opened for user alice by (uid=0)", "session_opened", "alice", False, None, None),
    ("pam_unix(sshd:session): session closed for user alice", "session_closed", "alice", False, None, None),
    ("Failed password for root from 2001:db8::17 port 40500 ssh2",
     "failed_password", "root", False, "2001:db8::17", 40500),
    ("Received disconnect from 2001:db8::18: 11: Bye Bye [preauth]", "disconnect", None, False, "2001:db8::18", None),
    ("Server listening on 0.0.0.0 port 22.", "other", None, False, None, None),
    ("fatal: Write failed: Connection reset by peer [preauth]", "other", None, False, None, None),
]
# fmt: on


def parse(lines: list[str | None], *, year: int = 2024) -> pl.DataFrame:
    return parse_auth_lines(pl.LazyFrame({"line": lines}, schema={"line": pl.String}), year=year).collect()


def assert_rows_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key, expected in w.items():
            if isinstance(expected, float):
                assert g[key] is not None and math.isclose(g[key], expected, rel_tol=1e-9, abs_tol=1e-9), (key, g, w)
            else:
                assert g[key] == expected, (key, g, w)


@pytest.mark.parametrize(("message", "event", "user", "invalid", "ip", "port"), CASES)
def test_parses_each_line_form(
    message: str, event: str, user: str | None, invalid: bool, ip: str | None, port: int | None
) -> None:
    row = parse([HEAD + message]).row(0, named=True)
    assert row == {
        "timestamp": datetime(2024, 3, 4, 10, 0, 1),
        "host": "gw1",
        "pid": 4242,
        "event": event,
        "user": user,
        "invalid_user": invalid,
        "source_ip": ip,
        "port": port,
        "parsed": True,
    }


def test_every_event_name_is_reachable_and_documented() -> None:
    assert {case[1] for case in CASES} == set(EVENTS)


@pytest.mark.parametrize(
    ("line", "timestamp", "host", "pid"),
    [
        ("Dec 31 23:59:59 a.example sshd[1]: x", datetime(2023, 12, 31, 23, 59, 59), "a.example", 1),
        ("Jan  9 08:07:06 h sshd[77]: x", datetime(2023, 1, 9, 8, 7, 6), "h", 77),
        ("Jan 9 08:07:06 h sshd[77]: x", datetime(2023, 1, 9, 8, 7, 6), "h", 77),
        ("Jul 14 08:07:06 h sshd-session[9]: x", datetime(2023, 7, 14, 8, 7, 6), "h", 9),
        ("Jul 14 08:07:06 h sshd: x", datetime(2023, 7, 14, 8, 7, 6), "h", None),
        ("2021-05-06T07:08:09.250000+02:00 h2 sshd[5]: x", datetime(2021, 5, 6, 7, 8, 9, 250_000), "h2", 5),
        ("2021-05-06T07:08:09Z h2 sshd[5]: x", datetime(2021, 5, 6, 7, 8, 9), "h2", 5),
        ("\x00\x00Jul 14 08:07:06 h sshd[3]: after a crash\r", datetime(2023, 7, 14, 8, 7, 6), "h", 3),
    ],
)
def test_reads_syslog_headers(line: str, timestamp: datetime, host: str, pid: int | None) -> None:
    row = parse([line], year=2023).row(0, named=True)
    assert (row["timestamp"], row["host"], row["pid"], row["parsed"]) == (timestamp, host, pid, True)


def test_dates_after_the_last_write_are_from_the_year_before() -> None:
    lines = ["Dec 31 23:59:00 h sshd[1]: x", "Jan  1 00:01:00 h sshd[2]: x", "2024-12-31T23:00:00 h sshd[3]: x"]
    events = parse_auth_lines(pl.LazyFrame({"line": lines}), year=2025, not_after=datetime(2025, 1, 1, 1)).collect()
    want = [datetime(2024, 12, 31, 23, 59), datetime(2025, 1, 1, 0, 1), datetime(2024, 12, 31, 23)]
    assert events.get_column("timestamp").to_list() == want


def test_unparsed_lines_are_kept_and_flagged() -> None:
    lines = [
        HEAD + "Connection closed by 203.0.113.8 [preauth]",
        "",
        None,
        "hello world",
        "Mar  4 10:00:01 gw1 CRON[99]: (root) CMD (run-parts /etc/cron.hourly)",
        "Foo  4 10:00:01 gw1 sshd[1]: Failed password for root from 203.0.113.5 port 1 ssh2",
        "Feb 29 10:00:01 gw1 sshd[1]: Failed password for root from 203.0.113.5 port 1 ssh2",
        HEAD + "Accepted password for alice from 198.51.100.20 port 50111 ssh2",
    ]
    df = parse(lines, year=2023)
    assert df.height == len(lines)
    assert df.get_column("parsed").to_list() == [True, False, False, False, False, False, False, True]
    unparsed = df.filter(~pl.col("parsed")).drop("parsed")
    assert all(unparsed.get_column(c).null_count() == unparsed.height for c in unparsed.columns)
    assert parse(lines[6:7], year=2024).get_column("parsed").to_list() == [True]  # a leap year has Feb 29


# Lines as a file gives them: no line feed inside.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n"))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(TEXT, TEXT.map(lambda s: HEAD + s)), min_size=1, max_size=20))
def test_any_text_gives_one_row_per_line(lines: list[str]) -> None:
    df = parse(lines)
    assert df.height == len(lines)
    ok = df.get_column("parsed")
    assert df.filter(ok).select("timestamp", "host", "event").null_count().row(0) == (0, 0, 0)
    assert set(df.filter(ok).get_column("event")) <= set(EVENTS)
    assert ok.to_list() == [line.lstrip("\x00").startswith(HEAD) for line in lines]


def events_as_dicts(df: pl.DataFrame) -> list[dict]:
    return df.select("timestamp", "event", "user", "invalid_user", "source_ip", "port").to_dicts()


@pytest.mark.parametrize("by", ["source_ip", "user"])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("every", "seconds"), [("10m", 600), ("1h", 3600), ("90s", 90)])
def test_window_features_match_reference_on_generated_logs(seed: int, every: str, seconds: int, by: str) -> None:
    lines, _ = ssh_auth_log(4000, seed=seed, attack_share=0.08)
    events = parse(lines)
    got = window_features(events.lazy(), every=every, by=by).collect()
    assert got.columns == [by, "window_start", *entity_features(by)]
    assert_rows_equal(got.to_dicts(), window_features_ref(events_as_dicts(events), seconds, by=by))


IPS = st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::3", None])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4 * 3600 * 10**6),
            IPS,
            st.sampled_from(EVENTS),
            st.sampled_from([None, "root", "kiosk", ""]),
            st.one_of(st.none(), st.booleans()),
            st.sampled_from([None, 22, 40000, 40001]),
        ),
        max_size=60,
    ),
    st.sampled_from([1, 60, 600, 3600]),
    st.sampled_from(["source_ip", "user"]),
)
def test_window_features_match_reference_on_random_events(rows: list[tuple], seconds: int, by: str) -> None:
    events = [
        {
            "timestamp": datetime(2024, 3, 4) + timedelta(microseconds=us),
            "event": ev,
            "user": user,
            "invalid_user": invalid,
            "source_ip": ip,
            "port": port,
        }
        for us, ip, ev, user, invalid, port in rows
    ]
    schema = {
        "timestamp": pl.Datetime("us"),
        "event": pl.String,
        "user": pl.String,
        "invalid_user": pl.Boolean,
        "source_ip": pl.String,
        "port": pl.Int64,
    }
    got = window_features(pl.LazyFrame(events, schema=schema), every=f"{seconds}s", by=by).collect()
    assert_rows_equal(got.to_dicts(), window_features_ref(events, seconds, by=by))


def test_lone_events_have_null_gaps_and_types_are_numeric() -> None:
    at = "Mar  4 10:0{}:0{} gw1 sshd[1]: {}"
    lines = [
        at.format(1, 0, "Failed password for root from 192.0.2.1 port 40000 ssh2"),
        at.format(1, 2, "Failed password for admin from 192.0.2.1 port 40001 ssh2"),
        at.format(1, 7, "Accepted password for alice from 192.0.2.1 port 40001 ssh2"),
        at.format(2, 0, "Connection closed by 198.51.100.4 [preauth]"),
        at.format(3, 0, "pam_unix(sshd:session): session closed for user alice"),
    ]
    got = window_features(parse(lines).lazy(), every="10m").collect()
    rows = {r["source_ip"]: r for r in got.to_dicts()}
    assert rows.keys() == {"192.0.2.1", "198.51.100.4"}
    lone = rows["198.51.100.4"]
    assert (lone["events"], lone["mean_gap_s"], lone["min_gap_s"], lone["distinct_ports"]) == (1, None, None, 0)
    busy = rows["192.0.2.1"]
    assert (busy["events"], busy["failures"], busy["accepted"], busy["distinct_users"]) == (3, 2, 1, 3)
    assert (busy["mean_gap_s"], busy["min_gap_s"], busy["distinct_ports"]) == (3.5, 2.0, 2)
    assert busy["failure_ratio"] == pytest.approx(2 / 3)
    assert got.schema["window_start"] == pl.Datetime("us")
    assert all(got.schema[c].is_numeric() for c in FEATURES)


def test_generator_is_deterministic_ordered_and_exact() -> None:
    a, attackers_a = ssh_auth_log(3000, seed=5)
    b, attackers_b = ssh_auth_log(3000, seed=5)
    c, _ = ssh_auth_log(3000, seed=6)
    assert (a, attackers_a) == (b, attackers_b)
    assert a != c
    assert len(a) == 3000 and attackers_a
    events = parse(a)
    assert events.get_column("parsed").all()
    assert events.get_column("timestamp").is_sorted()
    assert (events.get_column("event") != "other").all()
    seen = set(events.get_column("source_ip").drop_nulls())
    assert attackers_a <= seen
    assert not any(ip.startswith(("10.", "198.51.100.")) for ip in attackers_a)


def test_generator_without_attacks_has_no_attackers() -> None:
    lines, attackers = ssh_auth_log(2000, seed=3, attack_share=0.0)
    assert attackers == set()
    assert parse(lines).filter(pl.col("event") == "break_in_attempt").height == 0


@pytest.mark.parametrize("seed", [1, 7, 11])
def test_attackers_windows_fail_more_than_normal_ones(seed: int) -> None:
    lines, attackers = ssh_auth_log(10_000, seed=seed)
    features = window_features(parse(lines).lazy()).collect()
    attack = pl.col("source_ip").is_in(sorted(attackers))
    by_attacker = features.group_by(attack.alias("attacker")).agg(pl.col("failures").mean()).sort("attacker")
    normal_mean, attacker_mean = by_attacker.get_column("failures").to_list()
    assert attacker_mean > 10 * max(normal_mean, 0.05)


def test_read_auth_log_reports_read_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "auth.log"
    write_ssh_auth_log(path, 20, seed=1)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pl, "read_csv", denied)
    with pytest.raises(DataFileError, match="cannot be read"):
        read_auth_log(path, year=2024)


@pytest.mark.parametrize(("kwargs", "field"), [({"n_lines": 0}, "n_lines"), ({"attack_share": 1.5}, "attack_share")])
def test_generator_rejects_bad_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ssh_auth_log(**kwargs)


def test_read_auth_log_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    attackers = write_ssh_auth_log(path, 3000, seed=4, start=datetime(2022, 6, 1))
    table = read_auth_log(path)  # the year comes from the file's modification time
    lines, same_attackers = ssh_auth_log(3000, seed=4, start=datetime(2022, 6, 1))
    assert attackers == same_attackers
    assert (table.lines, table.parsed, table.unparsed) == (3000, 3000, 0)
    want = window_features(parse(lines, year=2022).lazy()).collect()
    assert table.features.equals(want)
    assert table.events == want.get_column("events").sum() > 0


@pytest.mark.parametrize("junk_first", [False, True])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_read_auth_log_copes_with_any_bytes(tmp_path: Path, junk_first: bool, newline: bytes) -> None:
    lines, _ = ssh_auth_log(400, seed=9)
    junk = [
        b"unit\x1fseparator\x1fbytes",
        b"quotes \" and ' and , ; | \t tabs",
        b"latin-1 caf\xe9 and invalid utf-8 \xff\xfe",
        b"\x00\x01\x02 control bytes",
    ]
    blank = [b"", b"   ", b"\t"]
    body = [line.encode() for line in lines]
    rows = junk + blank + body if junk_first else body[:200] + junk + blank + body[200:]
    path = tmp_path / "auth.log"
    path.write_bytes(newline.join(rows) + newline)
    table = read_auth_log(path, year=2024)
    assert (table.lines, table.parsed, table.unparsed) == (len(lines) + len(junk), len(lines), len(junk))
    assert table.features.equals(window_features(parse(lines).lazy()).collect())


def test_read_auth_log_dates_a_log_across_new_year(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    start = datetime(2023, 12, 31, 18)
    write_ssh_auth_log(path, 3000, seed=8, start=start)  # ends on 1 January, which its mtime says
    starts = read_auth_log(path).features.get_column("window_start")
    assert (starts.min(), starts.max().date()) == (start, datetime(2024, 1, 1).date())
    assert read_auth_log(path, year=2024).features.get_column("window_start").min().year == 2024


def test_read_auth_log_without_trailing_newline(tmp_path: Path) -> None:
    lines, _ = ssh_auth_log(50, seed=2)
    path = tmp_path / "secure"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert read_auth_log(path, year=2024).lines == 50


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.log", b""),
        ("blank.log", b"\n\n  \n"),
        ("random.log", random.Random(0).randbytes(8192)),
        ("table.csv", b"customer,secret\nC1,hunter2-password\n"),
        ("other.log", b"Mar  4 10:00:01 gw1 CRON[99]: hunter2-password\n"),
    ],
)
def test_read_auth_log_rejects_files_without_sshd_lines(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=name) as info:
        read_auth_log(path, year=2024)
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


def test_read_auth_log_rejects_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="no such file"):
        read_auth_log(tmp_path / "absent.log")
    with pytest.raises(DataFileError, match="no such file"):
        read_auth_log(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_read_auth_log_rejects_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    write_ssh_auth_log(path, 20, seed=1)
    path.chmod(0)
    try:
        with pytest.raises(DataFileError, match="cannot be read"):
            read_auth_log(path, year=2024)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"every": "1mo"}, "every"), ({"every": "0m"}, "every"), ({"year": 0}, "year")]
)
def test_read_auth_log_rejects_bad_arguments(tmp_path: Path, kwargs: dict, field: str) -> None:
    path = tmp_path / "auth.log"
    write_ssh_auth_log(path, 20, seed=1)
    with pytest.raises(InvalidInputError, match=field):
        read_auth_log(path, **kwargs)


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_read_auth_log_on_gpu_without_one(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    write_ssh_auth_log(path, 20, seed=1)
    with pytest.raises(UnsupportedOnGPU):
        read_auth_log(path, device="gpu")


def test_is_auth_log(tmp_path: Path) -> None:
    secure = tmp_path / "secure"
    write_ssh_auth_log(secure, 30, seed=1)
    rotated = tmp_path / "auth.log.1"
    rotated.write_bytes(b"\x00\x00" + secure.read_bytes())
    table = tmp_path / "customers"
    table.write_text("id,plan\n1,gold\n", encoding="utf-8")
    csv = tmp_path / "auth.csv"
    csv.write_bytes(secure.read_bytes())
    assert is_auth_log(secure) and is_auth_log(rotated) and is_auth_log(tmp_path / "anything.LOG")
    assert not is_auth_log(table) and not is_auth_log(csv) and not is_auth_log(tmp_path / "absent")
