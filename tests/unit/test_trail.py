"""finscore's own records: the audit trail of batch commands and model loads, the output guard that keeps card
numbers out of what they write, and the log scan that checks both after the suites."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.batch.scan import LocalSpec, scan
from engine.batch.score import score_file
from engine.cli import main
from engine.errors import InvalidInputError
from engine.families.churn import ChurnScorer
from engine.families.threat.train import ThreatTrainResult
from engine.security.audit import verify
from engine.security.guard import OutputGuard
from engine.security.protect import KeyRing, token_matches
from engine.security.trail import SUBJECT, DecisionAudit, Trail, subject_of, subjects_of
from tests.leak_scan import SELF_TEST, find_leaks, is_scanned, scanned_files

VISA = "4111111111111111"
SPACED = "4111 1111 1111 1111"


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FINSCORE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _keys() -> KeyRing:
    return KeyRing({1: bytes(range(32))})


def test_trail_keeps_its_records_private_and_its_pseudonyms_stable(home: Path) -> None:
    a, b = Trail.from_env(), Trail.from_env()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "pseudonym.key").stat().st_mode) == 0o600
    assert a.path == home / "audit.jsonl"
    # One key for every process; every spelling of a card is one subject; another key, another subject.
    assert a.subject(VISA) == b.subject(SPACED) == b.subject(f" {VISA} ".encode())
    assert a.subject(VISA) != subject_of(VISA, b"x" * 32) and a.subject("C0000000001") != a.subject(VISA)
    assert a.subject(None) is None and a.subject("  ") is None
    assert VISA not in a.subject(VISA)  # type: ignore[operator]


def test_a_column_of_subjects_is_what_one_value_at_a_time_gives() -> None:
    values = [VISA, SPACED, f" {VISA}-", "4111-1111-1111-1111", f"card {VISA}", "C0001", " C0001 ", "Zoë"]
    values += ["", "  ", None]
    key = b"k" * 32
    subjects = subjects_of(pl.Series(values, dtype=pl.String), key).to_list()
    assert subjects == [subject_of(v, key) for v in values]
    assert subjects[0] == subjects[1] == subjects[3] and subjects[5] == subjects[6] and subjects[0] != subjects[4]
    assert subjects[8:] == [None, None, None] and len(set(subjects[:8])) == 5  # the card, 3 texts, C0001
    assert subjects_of(pl.Series([42, None]), key).to_list() == [subject_of("42", key), None]


def test_a_column_of_subjects_strips_what_str_strip_strips() -> None:
    # Polars strips the spaces; values with control characters or non-ASCII take Python's own rules.
    values = [
        "\tC0001\n",
        "\x1cC0001\x1f",
        "\u00a0C0001\u3000",
        " \u2003 ",
        "\x1c",
        "C0001\x00",
        "Zoë ",
        f"\x0b{VISA}\x0c",
    ]
    key = b"k" * 32
    subjects = subjects_of(pl.Series(values, dtype=pl.String), key).to_list()
    assert subjects == [subject_of(v, key) for v in values]
    assert subjects[0] == subjects[1] == subjects[2] == subject_of("C0001", key) and subjects[3] is None
    assert subjects[4] is None and subjects[5] != subjects[0] and subjects[7] == subject_of(VISA, key)


@pytest.mark.parametrize("values", [["r1", None, "r2", "r3"], ["r1", "r2"], [None, "r1"], [], ["r1", "", "r2"]])
def test_a_column_of_distinct_subjects_keeps_its_order(values: list[str | None]) -> None:
    # Every value once (a scan's record ids) takes a path of its own: no mapping back from the distinct values.
    key = b"k" * 32
    subjects = subjects_of(pl.Series(values, dtype=pl.String), key)
    assert subjects.dtype == pl.String and subjects.name == SUBJECT
    assert subjects.to_list() == [subject_of(v, key) for v in values]


def test_decision_audit_writes_each_decision_and_the_run(home: Path) -> None:
    trail = Trail.from_env()
    audit = DecisionAudit(trail, command="score", model="churn", version=3, decision="action", score="p", subject="id")
    frame = pl.DataFrame({"row": [0, 2], "id": [VISA, None], "action": ["call", "none"], "p": [0.9, float("nan")]})
    audit.record(frame)
    assert not trail.path.exists() or not _lines(trail.path)  # queued until a batch fills or the run ends
    audit.close("written", rows=3, scored=2)
    lines = _lines(trail.path)
    assert [x["event"] for x in lines] == ["decision", "decision", "run"]
    assert lines[0]["request_id"] == f"{audit.run}/0" and lines[1]["request_id"] == f"{audit.run}/2"
    assert lines[0]["subject"] == trail.subject(VISA) and lines[1]["subject"] is None
    assert lines[0]["score"] == 0.9 and lines[1]["score"] is None and lines[0]["version"] == "3"
    assert lines[2] | {"decisions": 2, "status": "written", "rows": 3} == lines[2]
    assert verify(trail.path).ok and VISA not in trail.path.read_text()


def test_request_ids_of_row_numbers_are_the_runs_own_text_and_other_rows_are_searched(home: Path) -> None:
    trail = Trail.from_env()
    audit = DecisionAudit(trail, command="scan", model="threat", version=1, decision="d", score="s")
    audit.record(
        pl.DataFrame({"row": [3, 12], "d": ["alert"] * 2, "s": [1.0, 2.0]}), batch="u00000-b000000", prefix="7:"
    )
    audit.flush()
    assert [x["request_id"] for x in _lines(trail.path)] == [f"{audit.run}/7:3", f"{audit.run}/7:12"]
    with pytest.raises(ValueError, match="ending in a non-digit"):
        audit.record(pl.DataFrame({"row": [1], "d": ["alert"], "s": [1.0]}), prefix="7")
    audit.record(pl.DataFrame({"row": [VISA], "d": ["alert"], "s": [1.0]}))  # text rows: searched
    with pytest.raises(InvalidInputError, match="'request_id' .* looks like a card number"):
        audit.flush()
    assert VISA not in trail.path.read_text()


def test_queued_decisions_are_appended_in_whole_batches_until_the_last(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.security.trail as trail_module

    monkeypatch.setattr(trail_module, "BATCH", 4)
    trail = Trail.from_env()
    audit = DecisionAudit(trail, command="scan", model="threat", version=1, decision="d", score="s")
    for rows in ([0, 1, 2], [3, 4, 5, 6, 7, 8, 9]):
        audit.record(pl.DataFrame({"row": rows, "d": ["alert"] * len(rows), "s": [1.0] * len(rows)}))
    sealed = [x["seq"] for x in _lines(trail.path) if "hash" in x]
    assert len(_lines(trail.path)) == 8 and sealed == [3, 7]  # two appends of 4; 2 decisions still queued
    audit.close("written")
    lines = _lines(trail.path)
    assert [x["request_id"] for x in lines[:-1]] == [f"{audit.run}/{r}" for r in range(10)] and verify(trail.path).ok


def test_a_run_id_never_holds_a_long_run_of_decimal_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from engine.security.trail import new_run_id

    drawn = iter([uuid.UUID(hex=VISA + "0" * 16), uuid.UUID(hex="abc1234567890def" + "0" * 16)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert new_run_id() == "abc1234567890def"  # the first draw, 16 decimal digits, was drawn again


def test_a_scans_alerts_name_a_user_or_an_address_as_subject_never_a_record_id() -> None:
    from engine.batch.scan.run import CARRIED, SUBJECTS

    key = b"k" * 32
    guard = OutputGuard.build(CARRIED, subject=SUBJECTS, pseudonym_key=key)
    alerts = pl.DataFrame(
        {"record_id": ["e1", "e2"], "user_name": [None, "ann"], "source_ip": [None, "10.0.0.9"]},
        schema={"record_id": pl.String, "user_name": pl.String, "source_ip": pl.String},
    )
    assert guard.apply(alerts)[SUBJECT].to_list() == [None, subject_of("ann", key)]
    events = alerts.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in ("user_name", "source_ip"))
    assert SUBJECT not in guard.apply(events).columns  # network events: an event id names no person


def test_guard_masks_carried_columns_and_treats_the_asked_ones() -> None:
    frame = pl.DataFrame(
        {
            "row": [0, 1],
            "id": [f"card {SPACED}", "C0000000001"],
            "user": ["a", VISA],
            "note": [VISA, "x"],  # not carried: left as it is (the guard names what outputs copy)
            "big": [int(VISA), 7],
            "small": [1, 2],
        }
    )
    guard = OutputGuard.build(("id", "user", "big", "small"), tokenize=["user"], keys=_keys(), subject=("id",))
    out = guard.apply(frame)
    assert out["id"].to_list() == ["card 4111 11** **** 1111", "C0000000001"]
    assert token_matches(VISA, out["user"][1], _keys()) and out["user"][1] != VISA
    assert out["big"].to_list() == ["411111******1111", "7"] and out["small"].to_list() == [1, 2]
    assert out["note"].to_list() == [VISA, "x"] and SUBJECT not in out.columns  # no pseudonym key given
    keyed = OutputGuard.build(("id",), subject=("user", "id"), pseudonym_key=b"k" * 32).apply(frame)
    assert keyed[SUBJECT].to_list() == [subject_of("a", b"k" * 32), subject_of(VISA, b"k" * 32)]  # user first


def test_guard_refuses_what_it_cannot_do() -> None:
    with pytest.raises(InvalidInputError, match="--tokenize customer: the output carries no such input column"):
        OutputGuard.build(("id",), tokenize=["customer"], keys=_keys())
    with pytest.raises(InvalidInputError, match="need a key ring"):
        OutputGuard.build(("id",), encrypt=["id"])
    with pytest.raises(InvalidInputError, match="tokenize and to encrypt"):
        OutputGuard.build(("id",), tokenize=["id"], encrypt=["id"], keys=_keys())


def _with_cards(customers: pl.DataFrame, path: Path) -> Path:
    cards = pl.Series([VISA if i % 3 == 0 else None for i in range(customers.height)], dtype=pl.String)
    customers.with_columns(pl.coalesce(cards, pl.col("customer_id")).alias("customer_id")).write_parquet(path)
    return path


def test_score_masks_card_numbers_and_audits_every_decision(
    scorer: ChurnScorer, customers: pl.DataFrame, home: Path, tmp_path: Path
) -> None:
    data = _with_cards(customers.head(300), tmp_path / "in.parquet")
    trail = Trail.from_env()
    audit = DecisionAudit(
        trail, command="score", model="churn", version=1, decision="retention_action", score="churn_probability"
    )
    guard = OutputGuard.build(("id",), subject=("id",), pseudonym_key=trail.pseudonym_key)
    inputs = [(c.name, c.wire) for c in scorer.schema.columns]
    out = tmp_path / "scores.csv"
    summary = score_file(
        data, out, score=scorer.score, inputs=inputs, id_column="customer_id", guard=guard, audit=audit, progress=False
    )
    written = pl.read_csv(out)
    assert VISA not in out.read_text() and (written["id"] == "411111******1111").sum() == 100
    assert SUBJECT not in written.columns
    lines = _lines(trail.path)
    decisions = [x for x in lines if x["event"] == "decision"]
    assert len(decisions) == summary.scored == written.height and lines[-1]["status"] == "written"
    by_row = {int(x["request_id"].split("/")[1]): x for x in decisions}
    raw = pl.read_parquet(data)["customer_id"].to_list()
    for row, action, p in written.select("row", "retention_action", "churn_probability").iter_rows():
        assert by_row[row]["subject"] == trail.subject(raw[row])
        assert by_row[row]["decision"] == action and by_row[row]["score"] == pytest.approx(p, abs=1e-6)
    assert verify(trail.path).ok and VISA not in trail.path.read_text()


def test_a_failed_score_says_so_in_the_audit_and_writes_nothing(
    scorer: ChurnScorer, customers: pl.DataFrame, home: Path, tmp_path: Path
) -> None:
    calls = []

    def flaky(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the server went away")
        return scorer.score(arrays)

    trail = Trail.from_env()
    audit = DecisionAudit(
        trail, command="score", model="churn", version=1, decision="retention_action", score="churn_probability"
    )
    out = tmp_path / "scores.parquet"
    inputs = [(c.name, c.wire) for c in scorer.schema.columns]
    with pytest.raises(RuntimeError):
        score_file(
            _with_cards(customers.head(300), tmp_path / "in.parquet"),
            out,
            score=flaky,
            inputs=inputs,
            request_rows=100,
            audit=audit,
            progress=False,
        )
    assert not out.exists()
    lines = _lines(trail.path)
    assert lines[-1]["event"] == "run" and lines[-1]["status"] == "failed" and lines[-1]["decisions"] == 200


def test_scan_audits_each_alert_once_even_when_resumed(
    threat_trained: ThreatTrainResult, events: pl.DataFrame, home: Path, tmp_path: Path
) -> None:
    data = tmp_path / "events.parquet"
    events.head(2000).with_columns(pl.lit(VISA).alias("event_id")).write_parquet(data)
    trail = Trail.from_env()
    guard = OutputGuard.build(
        ("record_id", "user_name", "source_ip", "file"), subject=("record_id",), pseudonym_key=trail.pseudonym_key
    )
    out = tmp_path / "alerts.jsonl"
    spec = LocalSpec(str(threat_trained.path), threads=1)
    summary = scan([data], out, spec=spec, batch_rows=500, progress=False, guard=guard, trail=trail)
    assert summary.alerts > 0 and VISA not in out.read_text() and "411111******1111" in out.read_text()
    lines = _lines(trail.path)
    assert lines[0]["event"] == "model_load" and lines[0]["where"] == "in-process"
    decisions = [x for x in lines if x["event"] == "decision"]
    assert len(decisions) == summary.alerts and {x["subject"] for x in decisions} == {trail.subject(VISA)}
    assert lines[-1]["event"] == "run" and lines[-1]["alerts"] == summary.alerts
    assert verify(trail.path).ok and VISA not in trail.path.read_text()


def test_cli_score_writes_tokens_when_asked(
    trained: object, customers: pl.DataFrame, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINSCORE_PROTECT_KEYS", "v1 " + bytes(range(32)).hex())
    data = _with_cards(customers.head(50), tmp_path / "in.parquet")
    out = tmp_path / "scores.csv"
    repo = Path(trained.path).parent.parent  # type: ignore[attr-defined]
    argv = ["score", "churn", "--data", str(data), "--out", str(out), "--local", "--repo", str(repo)]
    assert main([*argv, "--tokenize", "id", "--no-progress"]) == 0
    ids = pl.read_csv(out)["id"].to_list()
    assert all(i.startswith("tok1:") for i in ids) and token_matches(VISA, ids[0], _keys())
    assert main([*argv, "--tokenize", "customer_id", "--no-progress"]) == 1  # one sentence, no traceback


def test_log_scan_finds_planted_leaks_and_not_float_decimals(tmp_path: Path) -> None:
    d = tmp_path / SELF_TEST
    d.mkdir()
    (d / "server.log").write_text(f"E1124 model.py:12] bad card {SPACED}\n", encoding="utf-8")
    (d / "audit.jsonl").write_text('{"subject":"C0010000042"}\n', encoding="utf-8")
    (d / "ok.jsonl").write_text('{"risk_score":458.8707580566406,"row":4111}\n', encoding="utf-8")
    pl.DataFrame({"anomaly_score": [1.0], "record_id": [VISA]}).write_parquet(d / "alerts.parquet")
    pl.DataFrame({"customer_id": [VISA]}).write_parquet(d / "data.parquet")  # input data: not scanned
    found = find_leaks(p for p in sorted(d.iterdir()) if is_scanned(p))
    assert sorted(Path(x.split(":")[0]).name for x in found) == ["alerts.parquet", "audit.jsonl", "server.log"]
    assert scanned_files(tmp_path) == []  # the session-wide scan skips planted leaks


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_home_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("FINSCORE_HOME", str(locked / "home"))
    with pytest.raises(Exception, match="set FINSCORE_HOME to a writable one"):
        Trail.from_env()
