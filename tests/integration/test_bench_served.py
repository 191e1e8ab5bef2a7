"""``finscore bench`` end to end: its own bundled Triton, perf_analyzer, both baselines and a two-point sweep."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.cli import main
from engine.families.churn import ChurnTrainResult
from engine.serving.server import free_port


def test_bench_measures_every_target_and_writes_reports(
    trained: ChurnTrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench" / "churn.json"
    args = ["bench", "churn", "--repo", str(trained.path.parent.parent), "--concurrency", "1,4", "--duration", "1",
            "--windows", "2", "--warmup", "0.3", "--floor-rounds", "2", "--sweep", "--sweep-instances", "1,2",
            "--sweep-delay", "0", "--sweep-max-batch", "256", "--p99-budget", "10000", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text(encoding="utf-8"))
    runs = figures["runs"]
    assert {r["target"] for r in runs} == {"triton", "perf_analyzer", "in-process", "fastapi", "floor"}
    assert all(r["errors"] == 0 and r["throughput"] > 0 for r in runs), [r["first_error"] for r in runs]
    # Every client's CPU is measured, perf_analyzer's too (a child process, counted once it has finished).
    assert all(0.02 < r["client_cores"] <= (os.cpu_count() or 1) for r in runs), [r["client_cores"] for r in runs]
    assert "| client cores |" in (out.parent / "churn.md").read_text(encoding="utf-8")
    closed = [r for r in runs if r["target"] == "triton" and r["mode"] == "closed" and r["config"] == "default"]
    assert [r["level"] for r in closed] == [1, 4]
    # Triton and FastAPI points are each measured over 2 windows, their mean reported (as perf_analyzer's trials).
    windowed = [
        r for r in runs if r["target"] in ("triton", "fastapi") and r["mode"] == "closed" and r["config"] == "default"
    ]
    assert len(windowed) == 4 and all(r["seconds"] == 2 for r in windowed)
    for r in windowed:
        assert len(r["window_throughputs"]) == 2 and r["throughput"] == pytest.approx(sum(r["window_throughputs"]) / 2)
    for r in closed:
        assert r["server"]["compute_infer_us"] > 0 and r["server"]["avg_batch"] >= 1
        assert r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"]
    open_runs = [r for r in runs if r["mode"] in ("constant", "poisson")]
    assert sorted({r["mode"] for r in open_runs}) == ["constant", "poisson"] and len(open_runs) == 4
    assert all(r["service"]["scheduled"] > 0 for r in open_runs)
    # perf_analyzer runs in the mode shaped like our client at each level (a blocking thread at 1, coroutines on one
    # thread at 4: its async mode with one thread), then in its default sync mode where that differs.
    assert [r["driver"] for r in closed] == ["threads", "coroutines"]
    assert [(r["level"], r["config"]) for r in runs if r["target"] == "perf_analyzer"] == [
        (1, "sync"), (4, "async"), (4, "sync")
    ]  # fmt: skip
    assert "perf_analyzer async" in printed and "(its mode shaped like finscore's client)" in printed
    sweep = figures["sweep"]
    assert [c["instances"] for c in sweep["configs"]] == [1, 2] and sweep["chosen"] in sweep["configs"]
    for suffix in (".md", "-latency.png", "-server.png", "-openloop.png"):
        assert (out.parent / f"churn{suffix}").is_file()
    assert "x the FastAPI baseline's throughput" in printed and "perf_analyzer" in printed
    # The floor, beside the model in the same run: rounds of one window of each at every level, the order
    # alternating, each on its own server statistics.
    rounds = [(r["target"], r["level"], r["config"]) for r in runs if r["config"].startswith("round ")]
    assert rounds == [
        ("floor", 1, "round 1"), ("triton", 1, "round 1"), ("triton", 1, "round 2"), ("floor", 1, "round 2"),
        ("floor", 4, "round 1"), ("triton", 4, "round 1"), ("triton", 4, "round 2"), ("floor", 4, "round 2"),
    ]  # fmt: skip
    floor = [r for r in runs if r["target"] == "floor"]
    assert all(r["seconds"] == 1 and r["server"]["compute_infer_us"] > 0 and r["errors"] == 0 for r in floor)
    assert "beside the floor in 2 rounds" in printed
    assert "x the floor's" in printed and "| floor |" in (out.parent / "churn.md").read_text(encoding="utf-8")
    assert figures["machine"]["tritonserver"] == "2.51.0"


def test_bench_says_what_is_wrong(trained: ChurnTrainResult, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(trained.path.parent.parent)
    assert main(["bench", "nosuch", "--repo", repo]) == 1
    assert "nosuch" in capsys.readouterr().err
    down = f"127.0.0.1:{free_port()}"
    assert main(["bench", "churn", "--url", down, "--no-baselines", "--duration", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and down in err and len(err.splitlines()) == 1
