"""What every benchmark prints at the end: the machine the figures came from, and the figures as JSON."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["machine_facts", "machine_line", "save_figures"]

#: Shown first, in this order; any other key of ``machine`` follows as ``name version``.
_FIXED = ("cores", "cpu", "python", "load_1m_before")


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    names = [text.split(":", 1)[1].strip() for text in lines if text.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def machine_facts(load_before: float, **versions: Any) -> dict[str, Any]:
    """Cores, CPU, Python and the load before the run, then ``versions`` (package name → version)."""
    facts = {
        "cores": os.cpu_count(),
        "cpu": _cpu_name(),
        "load_1m_before": round(load_before, 2),
        "python": platform.python_version(),
    }
    return {**facts, **versions}


def machine_line(machine: Mapping[str, Any]) -> str:
    """``machine: 2 cores (CPU), Python 3.11.7, <package> <version>..., 1-min load average before the run X``."""
    versions = ", ".join(f"{k} {v}" for k, v in machine.items() if k not in _FIXED)
    return (
        f"machine: {machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, {versions}, "
        f"1-min load average before the run {machine['load_1m_before']}"
    )


def save_figures(figures: Mapping[str, Any], path: Path | None) -> None:
    """Write ``figures`` as JSON to ``path`` (when one was asked for) and say where."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print(f"figures written to {path}")
