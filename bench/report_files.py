"""The benchmark suite's reports: the figures as JSON, a Markdown summary, PNG plots, and a comparison of two runs.

The suite's figures are one JSON-serialisable dict::

    machine   cores, cpu, python, load_1m_before, then package versions (see bench.report.machine_facts)
    settings  model, duration_s, batch, ...
    runs      one dict per measured point: target, config, mode (closed | constant | poisson), level
              (concurrency, or offered requests/s), batch, requests, errors, seconds, throughput
              (inferences/s), p50_ms, p90_ms, p99_ms, p999_ms, max_ms (NaN when nothing was answered),
              server (Triton's mean time per request by stage in µs and its average batch, or None)
    sweep     None, or the server-configuration sweep: budget_p99_ms, concurrency, configs, chosen

:func:`write_reports` writes the JSON, the Markdown and the plots side by side; :func:`compare` and
:func:`compare_table` tell whether new figures regressed against older ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

from bench.report import machine_line
from engine.errors import DataFileError

__all__ = ["compare", "compare_table", "load_figures", "markdown", "plots", "run_key", "write_reports"]

Run = Mapping[str, Any]

#: One table per mode, in this order, under these titles.
MODES = {"closed": "Closed loop", "constant": "Open loop, constant rate", "poisson": "Open loop, Poisson arrivals"}
OPEN_MODES = ("constant", "poisson")
PERCENTILES = {"p50_ms": "p50 ms", "p90_ms": "p90 ms", "p99_ms": "p99 ms", "p999_ms": "p99.9 ms"}
#: Triton's stages of a request, in the order they run, with their labels.
STAGES = {"queue_us": "queue", "compute_input_us": "input", "compute_infer_us": "infer", "compute_output_us": "output"}
#: The figures :func:`compare` looks at, and the direction of a bad change (throughput drops, p99 rises).
COMPARED = {"throughput": -1, "p99_ms": 1}


def run_key(run: Run) -> str:
    """The key of a run across two sets of figures, e.g. ``triton/default/closed/16/b1``."""
    return f"{run['target']}/{run['config']}/{run['mode']}/{run['level']:g}/b{run['batch']}"


def _number(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``-`` when it is missing or not finite."""
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _ms(value: float | None) -> str:
    """Milliseconds to three significant digits below 100 ms, whole ones above (no exponent either way)."""
    return _number(value, "#.3g" if value is not None and abs(value) < 99.95 else ".0f")


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def _table(header: list[str], rows: Iterable[list[str]], *, text_columns: int) -> list[str]:
    """A Markdown table; the first ``text_columns`` columns are aligned left, the numbers right."""
    rule = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return [_row(header), _row(rule), *(_row(cells) for cells in rows)]


def _run_cells(run: Run) -> list[str]:
    server = run.get("server")
    breakdown = [_number(server[k], ".0f") for k in STAGES] + [_number(server["avg_batch"], ".2f")] if server else []
    cells = [run["target"], run["config"], f"{run['level']:g}", _number(run["throughput"], ",.0f")]
    cells += [*(_ms(run[k]) for k in PERCENTILES), str(run["errors"]), _number(run.get("client_cores"), ".2f")]
    return [*cells, *(breakdown or ["-"] * (len(STAGES) + 1))]


def _mode_lines(mode: str, runs: list[Run]) -> list[str]:
    level = "concurrency" if mode == "closed" else "offered req/s"
    header = ["target", "config", level, "throughput (inferences/s)", *PERCENTILES.values(), "errors", "client cores"]
    header += [f"{label} µs" for label in STAGES.values()] + ["avg batch"]
    lines = [f"## {MODES[mode]}", "", *_table(header, map(_run_cells, runs), text_columns=2), ""]
    timelines = [(run, run.get("service", {}).get("p50_by_second_ms")) for run in runs]
    if any(t for _, t in timelines):
        lines += ["Median latency from the intended send, second by second of the run (ms):", ""]
        lines += [
            f"- {r['target']} at {r['level']:g} req/s: " + ", ".join(_ms(v) for v in t) for r, t in timelines if t
        ]
        lines.append("")
    windows = [(run, run.get("window_throughputs")) for run in runs]
    if any(w for _, w in windows):
        lines += ["Throughput of each back-to-back window, the table showing their mean (inferences/s):", ""]
        lines += [
            f"- {r['target']} at {r['level']:g}: " + ", ".join(_number(v, ",.0f") for v in w) for r, w in windows if w
        ]
        lines.append("")
    return lines


def _config_name(config: Mapping[str, Any]) -> str:
    """A sweep configuration named as the runs name it: ``instances=2 delay_us=0 max_batch=4096``."""
    return f"instances={config['instances']} delay_us={config['delay_us']} max_batch={config['max_batch']}"


def _sweep_lines(sweep: Mapping[str, Any]) -> list[str]:
    budget = sweep["budget_p99_ms"]
    header = ["instances", "delay µs", "max batch", "throughput (inferences/s)", "p99 ms", "errors"]
    numbers = ("instances", "delay_us", "max_batch")
    rows = [
        [*(str(c[k]) for k in numbers), _number(c["throughput"], ",.0f"), _ms(c["p99_ms"]), str(c["errors"])]
        for c in sweep["configs"]
    ]
    chosen = sweep.get("chosen")
    verdict = (
        f"Chosen configuration: {_config_name(chosen)} ({_number(chosen['throughput'], ',.0f')} inferences/s, "
        f"p99 {_ms(chosen['p99_ms'])} ms)."
        if chosen
        else f"No configuration met the p99 budget of {budget:g} ms."
    )
    intro = f"Closed loop at concurrency {sweep['concurrency']}, p99 budget {budget:g} ms."
    return ["## Server configuration sweep", "", intro, "", *_table(header, rows, text_columns=0), "", verdict, ""]


def markdown(figures: Mapping[str, Any]) -> str:
    """A Markdown summary: the machine, one table per mode that has runs, and the sweep when there was one."""
    settings = figures["settings"]
    lines = [f"# Benchmark of {settings['model']}", "", machine_line(figures["machine"]), ""]
    lines += ["settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()), ""]
    for mode in MODES:
        runs = [run for run in figures["runs"] if run["mode"] == mode]
        lines += _mode_lines(mode, runs) if runs else []
    if figures.get("sweep"):
        lines += _sweep_lines(figures["sweep"])
    return "\n".join(lines)


def _answered(run: Run) -> bool:
    """Whether a run answered requests, and so has a place on a plot."""
    return all(v is not None and math.isfinite(v) and v > 0 for v in (run["throughput"], run["p50_ms"], run["p99_ms"]))


def _series(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs by ``target/config/mode``, in order of first appearance, each series sorted by level."""
    series: dict[str, list[Run]] = {}
    for run in runs:
        series.setdefault(f"{run['target']}/{run['config']}/{run['mode']}", []).append(run)
    return {name: sorted(runs, key=lambda run: run["level"]) for name, runs in series.items()}


def _legend(ax: Axes, title: str | None = None) -> None:
    """A legend beside the axes, where many series cannot hide the lines."""
    ax.legend(fontsize="small", title=title, title_fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))


def _plain_log_ticks(axis: Axis) -> None:
    """Label a log axis at 1, 2 and 5 of each decade with plain numbers (0.5, 20), not powers of ten."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _latency_lines(ax: Axes, series: dict[str, list[Run]], x: str) -> None:
    """p99 as a solid line with markers and p50 dashed in the same colour, per series, on a log scale."""
    for name, runs in series.items():
        xs = [run[x] for run in runs]
        (p99,) = ax.plot(xs, [run["p99_ms"] for run in runs], marker="o", label=name)
        ax.plot(xs, [run["p50_ms"] for run in runs], "--", marker=".", color=p99.get_color())
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, "p99 solid, p50 dashed")


def _save(fig: Figure, path: Path) -> Path:
    # A bare Figure is never registered with pyplot, so it is freed once saved: nothing to close, no GUI.
    fig.savefig(path, dpi=120)
    return path


def _latency_plot(runs: list[Run], model: str, path: Path) -> Path:
    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.add_subplot()
    _latency_lines(ax, _series(runs), "throughput")
    throughputs = [run["throughput"] for run in runs]
    if max(throughputs) > 10 * min(throughputs):  # e.g. in-process beside a server: linear would squash the server
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("throughput (inferences/s)")
    ax.set_title(f"{model}: p99 and p50 latency against throughput")
    return _save(fig, path)


def _server_plot(runs: list[Run], model: str, path: Path) -> Path:
    labels = [f"{r['target']}/{r['config']}/{r['mode']}/{r['level']:g}" for r in runs]
    fig = Figure(figsize=(10, 2 + 0.4 * len(runs)), layout="constrained")
    ax = fig.add_subplot()
    left = [0.0] * len(runs)
    for key, label in STAGES.items():
        widths = [run["server"][key] for run in runs]
        ax.barh(range(len(runs)), widths, left=left, label=f"compute {label}" if key != "queue_us" else label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(len(runs)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("mean time per request in Triton (µs)")
    ax.set_ylabel("target/config/mode/level")
    ax.set_title(f"{model}: where a request's time goes on the server")
    _legend(ax)
    return _save(fig, path)


def _open_loop_plot(runs: list[Run], model: str, path: Path) -> Path:
    fig = Figure(figsize=(9, 9), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    series = _series(runs)
    _latency_lines(top, series, "level")
    top.set_title(f"{model}, open loop: p99 and p50 latency from the intended send time")
    for name, group in series.items():
        bottom.plot([r["level"] for r in group], [r["throughput"] / r["batch"] for r in group], marker="o", label=name)
    offered = [min(r["level"] for r in runs), max(r["level"] for r in runs)]
    bottom.plot(offered, offered, ":", color="grey", label="every offered request answered")
    bottom.set_xlabel("offered rate (requests/s)")
    bottom.set_ylabel("achieved rate (answered requests/s)")
    bottom.grid(True, alpha=0.3)
    _legend(bottom)
    return _save(fig, path)


def plots(figures: Mapping[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Write the plots of ``figures`` as PNG files in ``out_dir``, skipping runs that answered nothing.

    Parameters
    ----------
    figures
        The suite's figures (``settings["model"]`` names the model in the titles).
    out_dir, stem
        Where to write: ``<stem>-latency.png`` (p99 and p50 against throughput), ``<stem>-server.png`` (Triton's
        time per stage; only when some run has a server breakdown) and ``<stem>-openloop.png`` (latency and
        achieved rate against the offered rate; only when there are open-loop runs).

    Returns
    -------
    list of Path
        The files written, in that order; none when no run answered a request.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model = figures["settings"]["model"]
    runs = [run for run in figures["runs"] if _answered(run)]
    served = [run for run in runs if run.get("server")]
    open_runs = [run for run in runs if run["mode"] in OPEN_MODES]
    written = [_latency_plot(runs, model, out_dir / f"{stem}-latency.png")] if runs else []
    written += [_server_plot(served, model, out_dir / f"{stem}-server.png")] if served else []
    written += [_open_loop_plot(open_runs, model, out_dir / f"{stem}-openloop.png")] if open_runs else []
    return written


def _change(old: float | None, new: float | None) -> float:
    """``new`` relative to ``old`` as a signed fraction; NaN when either is missing."""
    if old is None or new is None:
        return math.nan
    if old == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new)
    return (new - old) / old


def compare(new: Mapping[str, Any], old: Mapping[str, Any], *, tolerance: float = 0.10) -> list[dict[str, Any]]:
    """Throughput and p99 of every run present in both sets of figures, with regressions flagged.

    A regression is a throughput drop, or a p99 rise, of more than ``tolerance`` as a fraction of the old
    figure. Runs present on one side only are left out. Rows follow the order of ``new``'s runs, two per run
    (``throughput`` then ``p99_ms``), each ``{"key", "metric", "old", "new", "change", "regression"}``.
    """
    before = {run_key(run): run for run in old["runs"]}
    after = {run_key(run): run for run in new["runs"]}
    rows = []
    for key in (k for k in after if k in before):
        for metric, worse in COMPARED.items():
            was, now = before[key].get(metric), after[key].get(metric)
            change = _change(was, now)
            row = {"key": key, "metric": metric, "old": was, "new": now, "change": change}
            rows.append({**row, "regression": worse * change > tolerance})
    return rows


def _compare_cells(row: Mapping[str, Any]) -> list[str]:
    numbers = [_number(row["old"], ".2f"), _number(row["new"], ".2f"), _number(row["change"], "+.1%")]
    return [row["key"], row["metric"], *numbers, "REGRESSION" if row["regression"] else ""]


def compare_table(rows: list[dict[str, Any]], tolerance: float) -> str:
    """The rows of :func:`compare` as a plain-text table, ending with one sentence on how many regressed."""
    header = ["key", "metric", "old", "new", "change", ""]
    body = [_compare_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if 2 <= i <= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in (header, *body)
    ]
    regressed, beyond = sum(r["regression"] for r in rows), f"{tolerance * 100:g}%"
    if not rows:
        verdict = "No run was measured in both sets of figures."
    elif regressed:
        verdict = f"{regressed} of {len(rows)} figures regressed beyond {beyond}."
    else:
        verdict = f"No figure regressed beyond {beyond}."
    return "\n".join([*(line.rstrip() for line in lines), verdict])


def write_reports(figures: Mapping[str, Any], json_path: Path) -> list[Path]:
    """Write ``figures`` as JSON to ``json_path``, the Markdown beside it (``.md``) and the plots (same stem).

    Returns
    -------
    list of Path
        The JSON, the Markdown, then the plots written.
    """
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(figures), encoding="utf-8")
    return [json_path, md_path, *plots(figures, json_path.parent, json_path.stem)]


def load_figures(path: Path) -> dict[str, Any]:
    """The figures saved at ``path``.

    Raises
    ------
    DataFileError
        (an :class:`~engine.errors.InvalidInputError`) when the file is missing, unreadable, not JSON, or has
        no ``runs`` list.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"figures file {path} cannot be read ({exc.strerror})."
        raise DataFileError(msg) from None
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for a binary file
        msg = f"figures file {path} is not JSON: {exc}."
        raise DataFileError(msg) from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        msg = f'figures file {path} has no "runs" list: expected the figures the benchmark suite writes.'
        raise DataFileError(msg)
    return data
