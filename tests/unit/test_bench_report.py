"""The benchmark suite's report writer: comparison of two runs, Markdown sections, PNG plots, loading figures."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from bench.report_files import compare, compare_table, load_figures, markdown, plots, run_key, write_reports
from engine.errors import InvalidInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SERVER = {
    "queue_us": 40.0,
    "compute_input_us": 19.0,
    "compute_infer_us": 1100.0,
    "compute_output_us": 70.0,
    "avg_batch": 1.0,
}


def _run(target: str, mode: str, level: float, throughput: float, p99: float) -> dict:
    return {
        "target": target,
        "config": "default" if target == "triton" else "-",
        "mode": mode,
        "level": level,
        "batch": 1,
        "requests": int(throughput * 10),
        "errors": 0,
        "seconds": 10.0,
        "throughput": throughput,
        "p50_ms": p99 / 3,
        "p90_ms": p99 / 2,
        "p99_ms": p99,
        "p999_ms": p99 * 2,
        "max_ms": p99 * 3,
        "server": dict(SERVER) if target == "triton" else None,
    }


def _figures(runs: list[dict], sweep: dict | None = None) -> dict[str, Any]:
    machine = {"cores": 2, "cpu": "Test CPU", "python": "3.11.7", "load_1m_before": 0.5, "tritonserver": "2.51.0"}
    return {
        "machine": machine,
        "settings": {"model": "churn", "duration_s": 10, "batch": 1},
        "runs": runs,
        "sweep": sweep,
    }


def _full_figures() -> dict[str, Any]:
    """Closed and Poisson runs of two targets, one Poisson run that answered nothing, and a sweep."""
    runs = [_run(t, "closed", c, 1000.0 * c**0.5, 2.0 * c) for t in ("triton", "fastapi") for c in (1, 4, 16)]
    runs += [_run("triton", "poisson", rate, rate * 0.98, 1.0 + rate / 500) for rate in (500.0, 1000.0, 2000.0)]
    empty = _run("triton", "poisson", 4000.0, 0.0, math.nan) | {"requests": 0, "server": None}
    configs = [
        {"instances": 1, "delay_us": 0, "max_batch": 4096, "throughput": 2400.0, "p99_ms": 12.0, "errors": 0},
        {"instances": 2, "delay_us": 100, "max_batch": 4096, "throughput": 3100.0, "p99_ms": 8.0, "errors": 0},
    ]
    sweep = {"budget_p99_ms": 10.0, "concurrency": 16, "configs": configs, "chosen": configs[1]}
    return _figures([*runs, empty], sweep)


def _changed(figures: dict[str, Any], key: str, **values: float) -> dict[str, Any]:
    out = copy.deepcopy(figures)
    for run in out["runs"]:
        if run_key(run) == key:
            run.update(values)
    return out


def test_run_key_names_target_config_mode_level_and_batch() -> None:
    assert run_key(_run("triton", "constant", 250.0, 250.0, 3.0)) == "triton/default/constant/250/b1"


@pytest.mark.parametrize(
    ("metric", "factor", "regression"),
    [
        ("throughput", 0.80, True),
        ("throughput", 0.95, False),
        ("throughput", 1.20, False),
        ("p99_ms", 1.20, True),
        ("p99_ms", 1.05, False),
        ("p99_ms", 0.80, False),
    ],
)
def test_compare_flags_only_changes_beyond_tolerance_in_the_bad_direction(
    metric: str, factor: float, regression: bool
) -> None:
    old = _figures([_run("triton", "closed", 16, 2000.0, 10.0)])
    key = run_key(old["runs"][0])
    new = _changed(old, key, **{metric: old["runs"][0][metric] * factor})
    rows = {row["metric"]: row for row in compare(new, old, tolerance=0.1)}
    assert set(rows) == {"throughput", "p99_ms"}
    assert rows[metric]["regression"] is regression
    assert rows[metric]["change"] == pytest.approx(factor - 1)
    other = "p99_ms" if metric == "throughput" else "throughput"
    assert rows[other]["regression"] is False
    assert rows[other]["change"] == 0


def test_compare_ignores_runs_present_on_one_side_only() -> None:
    both = _run("triton", "closed", 16, 2000.0, 10.0)
    old = _figures([both, _run("fastapi", "closed", 16, 500.0, 40.0)])
    new = _figures([_run("in-process", "closed", 1, 9000.0, 0.2), copy.deepcopy(both)])
    rows = compare(new, old)
    assert [(row["key"], row["metric"]) for row in rows] == [(run_key(both), "throughput"), (run_key(both), "p99_ms")]


def test_compare_table_marks_regressions_and_counts_them() -> None:
    old = _figures([_run("triton", "closed", 16, 2000.0, 10.0), _run("fastapi", "closed", 16, 500.0, 40.0)])
    new = _changed(old, "triton/default/closed/16/b1", throughput=1500.0)
    table = compare_table(compare(new, old, tolerance=0.1), 0.1)
    regressed = [line for line in table.splitlines() if "REGRESSION" in line]
    assert len(regressed) == 1 and "triton/default/closed/16/b1" in regressed[0] and "-25.0%" in regressed[0]
    assert table.splitlines()[-1] == "1 of 4 figures regressed beyond 10%."
    assert compare_table(compare(old, old), 0.1).splitlines()[-1] == "No figure regressed beyond 10%."


def test_markdown_has_a_table_for_each_mode_present_and_the_chosen_configuration() -> None:
    text = markdown(_full_figures())
    assert "## Closed loop" in text and "## Open loop, Poisson arrivals" in text
    assert "constant rate" not in text
    assert "| concurrency |" in text and "| offered req/s |" in text
    assert "2 cores (Test CPU), Python 3.11.7, tritonserver 2.51.0" in text
    assert "Chosen configuration: instances=2 delay_us=100 max_batch=4096" in text
    fastapi_rows = [line for line in text.splitlines() if line.startswith("| fastapi |")]
    assert len(fastapi_rows) == 3 and all(line.endswith("| - | - | - | - | - |") for line in fastapi_rows)


def test_markdown_without_open_loops_or_a_configuration_within_budget() -> None:
    figures = _full_figures()
    figures["runs"] = [run for run in figures["runs"] if run["mode"] == "closed"]
    figures["sweep"]["chosen"] = None
    text = markdown(figures)
    assert "## Closed loop" in text and "Open loop" not in text and "offered req/s" not in text
    assert "No configuration met the p99 budget of 10 ms." in text
    assert "Server configuration sweep" not in markdown(figures | {"sweep": None})


def _assert_pngs(paths: list[Path]) -> None:
    for path in paths:
        assert path.read_bytes().startswith(PNG_SIGNATURE)
        image = imread(path)
        assert image.shape[0] > 0 and image.shape[1] > 0


def test_plots_write_readable_pngs_and_a_server_plot_only_with_server_breakdowns(tmp_path: Path) -> None:
    figures = _full_figures()
    paths = plots(figures, tmp_path, "suite")
    assert [path.name for path in paths] == ["suite-latency.png", "suite-server.png", "suite-openloop.png"]
    _assert_pngs(paths)
    for run in figures["runs"]:
        run["server"] = None
    figures["runs"] = [run for run in figures["runs"] if run["mode"] == "closed"]
    paths = plots(figures, tmp_path / "closed", "suite")
    assert [path.name for path in paths] == ["suite-latency.png"]
    _assert_pngs(paths)


def test_plots_leave_out_runs_that_answered_nothing(tmp_path: Path) -> None:
    unanswered = _run("triton", "constant", 4000.0, 0.0, math.nan) | {"requests": 0}
    figures = _figures([_run("fastapi", "closed", 4, 800.0, 5.0), unanswered])
    assert [path.name for path in plots(figures, tmp_path, "suite")] == ["suite-latency.png"]
    assert plots(_figures([unanswered]), tmp_path / "none", "suite") == []


def test_write_reports_writes_json_markdown_and_plots_into_a_new_folder(tmp_path: Path) -> None:
    figures = _full_figures()
    json_path = tmp_path / "results" / "suite.json"
    paths = write_reports(figures, json_path)
    names = {"suite.json", "suite.md", "suite-latency.png", "suite-server.png", "suite-openloop.png"}
    assert {path.name for path in paths} == names and all(path.is_file() for path in paths)
    loaded = load_figures(json_path)
    assert loaded["runs"][:-1] == figures["runs"][:-1]  # the last run's NaN never equals itself
    assert json_path.with_suffix(".md").read_text(encoding="utf-8") == markdown(figures)


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "cannot be read"), ("{not json", "is not JSON"), ('{"machine": {}}', 'no "runs" list'), ("[]", "runs")],
)
def test_load_figures_refuses_a_missing_file_bad_json_or_no_runs(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "figures.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError, match=says):
        load_figures(path)


def test_load_figures_reads_what_the_suite_wrote(tmp_path: Path) -> None:
    figures = _figures([_run("triton", "closed", 16, 2000.0, 10.0)])
    path = tmp_path / "figures.json"
    path.write_text(json.dumps(figures), encoding="utf-8")
    assert load_figures(path) == figures


def test_markdown_lists_an_open_loop_second_by_second() -> None:
    run = _run("triton", "constant", 3000, 1500.0, 900.0)
    run["service"] = {"p50_by_second_ms": [120.0, 480.0, 910.0]}
    text = markdown(_figures([run, _run("triton", "closed", 16, 2000.0, 12.0)]))
    assert "second by second" in text
    assert "- triton at 3000 req/s: 120, 480, 910" in text


def test_markdown_lists_each_window_of_a_closed_loop() -> None:
    windowed = _run("triton", "closed", 16, 5000.0, 6.0)
    windowed["window_throughputs"] = [4700.0, 5100.0, 5200.0]
    text = markdown(_figures([windowed, _run("perf_analyzer", "closed", 16, 4800.0, 6.0)]))
    assert "- triton at 16: 4,700, 5,100, 5,200" in text
    assert "- perf_analyzer at 16" not in text
    assert "each back-to-back window" not in markdown(_figures([_run("triton", "closed", 16, 5000.0, 6.0)]))
