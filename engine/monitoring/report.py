"""A drift report's files: its figures as JSON, and one HTML page an operator can open or attach to a ticket.

The page is a single file: the table, then one PNG per drifted column (reference and current shares side by side
over the bins its PSI was taken over), embedded as base64 so the page can be moved or mailed alone. The images
are drawn on bare matplotlib figures with the Agg canvas: no pyplot state, no display needed. Matplotlib comes
with the ``bench`` extra, so :func:`require_matplotlib` says so before any work is done.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from engine.errors import FinscoreError
from engine.monitoring.compare import HEADER, DriftReport
from engine.monitoring.drift import FeatureDrift

__all__ = ["MAX_BARS", "REPORT_FILE", "require_matplotlib", "write_html", "write_json"]

REPORT_FILE = "index.html"
#: Bins drawn per column at most (the largest; a column of many categories would be unreadable).
MAX_BARS = 30


def _atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_json(report: DriftReport, path: str | Path) -> Path:
    """The report's figures (:meth:`DriftReport.as_dict`) as JSON, written whole or not at all."""
    return _atomic(Path(path), json.dumps(report.as_dict(), indent=2) + "\n")


def require_matplotlib() -> None:
    """Raise one sentence naming the extra that installs matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as exc:
        msg = "finscore drift --report needs matplotlib, which is not installed: pip install 'finscore[bench]'"
        raise FinscoreError(msg) from exc


def _histogram_png(feature: FeatureDrift) -> bytes:
    """The reference and current shares of ``feature``'s bins as grouped bars (the largest :data:`MAX_BARS`)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    r = np.asarray(feature.reference_counts, dtype=np.float64)
    c = np.asarray(feature.current_counts, dtype=np.float64)
    r, c = r / max(r.sum(), 1.0), c / max(c.sum(), 1.0)
    shown = np.sort(np.argsort(-np.maximum(r, c), kind="stable")[:MAX_BARS])
    labels = [feature.bins[i] for i in shown]
    x = np.arange(len(shown))
    fig = Figure(figsize=(9, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(x - 0.2, 100 * r[shown], width=0.4, label="reference")
    ax.bar(x + 0.2, 100 * c[shown], width=0.4, label="current")
    ax.set_xticks(x, labels, rotation=45 if len(shown) > 6 else 0, ha="right" if len(shown) > 6 else "center")
    ax.set_ylabel("share of rows (%)")
    hidden = len(feature.bins) - len(shown)
    more = f", {hidden} smaller bins not drawn" if hidden else ""
    ax.set_title(f"{feature.column} ({feature.kind}): PSI {feature.psi:.3f}{more}")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()


def _cells(values: Any, tag: str) -> str:
    return "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values)


def write_html(report: DriftReport, folder: str | Path) -> Path:
    """``folder/index.html``: the table and one embedded histogram pair per drifted column."""
    require_matplotlib()
    e = html.escape
    model = report.model
    lines = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>finscore drift</title>',
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}.yes{color:#b00020}</style>",
        "</head><body>",
        "<h1>Data drift</h1>",
        f"<p>reference: {e(report.reference)} ({report.reference_rows:,} rows)<br>"
        f"current: {e(report.current)} ({report.current_rows:,} rows)<br>"
        f"drifted: PSI &ge; {report.threshold:g}</p>",
    ]
    if model is not None:
        lines.append(f"<p>model {e(model.name)} version {e(model.version)} ({e(model.family)})</p>")
    lines += [f"<p>{e(note)}</p>" for note in report.notes]
    lines.append(f"<table><tr>{_cells(HEADER, 'th')}</tr>")
    for row in report.rows():
        lines.append(f'<tr class="{row[-1]}">{_cells(row, "td")}</tr>')
    lines.append(f"</table><p>{e(report.summary())}</p>")
    for feature in report.drifted:
        png = base64.b64encode(_histogram_png(feature)).decode("ascii")
        alt = f"{feature.column}: reference and current histograms"
        lines += [f"<h2>{e(feature.column)}</h2>", f'<img alt="{e(alt)}" src="data:image/png;base64,{png}">']
    lines.append("</body></html>")
    return _atomic(Path(folder) / REPORT_FILE, "\n".join(lines) + "\n")
