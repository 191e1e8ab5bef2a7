"""`make run`'s job end to end: both models trained, served by one Triton, scored, scanned, stopped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.demo.job import run_demo


def test_demo_scores_customers_and_scans_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINSCORE_HOME", str(tmp_path / "home"))  # its own audit log, counted below
    run_demo(rows=1500, workdir=tmp_path / "demo", repo=tmp_path / "repo")
    out = capsys.readouterr().out
    assert "scored 8 customers over gRPC" in out and "Triton stopped." in out
    caught = re.search(r"alerts name (\d+) addresses: (\d+) of the (\d+) attackers", out)
    assert caught is not None
    named, hit, attackers = map(int, caught.groups())
    assert hit >= attackers / 2 and hit <= named
    alerts = [json.loads(line) for line in (tmp_path / "demo" / "alerts.jsonl").read_text().splitlines()]
    assert len({a["source"]["ip"] for a in alerts}) == named
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["churn", "fraud", "threat", "threat_features"]
    fraud = re.search(r"scored 4 card authorizations.*?\n\n(.*?)\n   demo-3", out, re.S)
    assert fraud is not None
    decisions = {line.split()[0]: line.split()[3] for line in fraud.group(1).splitlines()[2:]}
    assert decisions["demo-3"] in {"review", "decline"} and decisions["demo-1"] == "approve"
    audit = re.search(r"10\. audit log .*?: ([\d,]+) lines \((.*?)\).*audit log OK", out)
    assert audit is not None, out[-600:]
    counts = {e: int(n.replace(",", "")) for n, e in (part.split() for part in audit.group(2).split(", "))}
    assert counts["decision"] >= 1500 and counts["model_load"] >= 4 and counts["run"] == 2
    assert "; 0 of them name a customer by id" in out
