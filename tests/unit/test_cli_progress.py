"""The progress bar of ``score``, ``scan`` and ``recommend --data`` (in-process): drawn on stderr only when stderr is
a terminal, unless ``--progress`` or ``--no-progress`` says otherwise, so that a log or a pipe starts with the
command's own lines rather than a bar redrawn with carriage returns."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import polars as pl
import pytest

from engine.cli import main
from engine.families.churn import ChurnTrainResult
from engine.families.recommender import RecommenderTrainResult
from engine.families.threat import ThreatTrainResult


class Terminal(io.StringIO):
    """A stderr that says it is a terminal and keeps what is written to it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def commands(
    trained: ChurnTrainResult,
    customers_path: Path,
    threat_trained: ThreatTrainResult,
    events_path: Path,
    recommender_trained: RecommenderTrainResult,
    advisory: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[list[str], str]]:
    """Each command in-process on the session's trained versions (``{out}``: where it writes), and the name
    its bar carries."""
    who = tmp_path_factory.mktemp("progress") / "who.parquet"
    pl.read_parquet(advisory["customers.parquet"]).head(40).select("customer_id").write_parquet(who)
    repo = trained.path.parent.parent
    assert threat_trained.path.parent.parent == recommender_trained.path.parent.parent == repo
    local = ["--local", "--repo", str(repo)]
    return {
        "score": (["score", "churn", "--data", str(customers_path), "--out", "{out}.parquet", *local], "scoring"),
        "scan": (["scan", str(events_path), "--out", "{out}.jsonl", *local], "scanning"),
        "recommend": (["recommend", "--data", str(who), "--out", "{out}.parquet", *local], "scoring"),
    }


@pytest.mark.parametrize("command", ["score", "scan", "recommend"])
@pytest.mark.parametrize(
    ("terminal", "flags", "drawn"),
    [
        (False, [], False),  # a log file or a pipe: no bar by default
        (True, [], True),  # a terminal: the bar by default
        (False, ["--progress"], True),  # forced on
        (True, ["--no-progress"], False),  # forced off
    ],
    ids=["pipe", "terminal", "pipe-progress", "terminal-no-progress"],
)
def test_the_bar_is_drawn_on_a_terminal_or_when_asked(
    commands: dict[str, tuple[list[str], str]],
    command: str,
    terminal: bool,
    flags: list[str],
    drawn: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, bar = commands[command]
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    out = str(tmp_path / command)
    code = main([*(a.replace("{out}", out) for a in argv), *flags])
    printed = capsys.readouterr().out
    assert code == 0, stderr.getvalue()
    assert str(tmp_path) in printed  # the command ran and said where it wrote
    written = stderr.getvalue()
    if drawn:
        assert f"{bar}:" in written and "rows" in written
    else:
        assert bar not in written and "\r" not in written


def test_progress_and_no_progress_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["score", "churn", "--data", "x.csv", "--out", "o.csv", "--progress", "--no-progress"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
