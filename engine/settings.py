"""Settings resolved once: command-line flag > environment (``FINSCORE_*``) > defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from engine.serving.repository import DEFAULT_REPOSITORY

__all__ = ["Settings", "resolve_settings"]


@dataclass(frozen=True)
class Settings:
    repo: Path = DEFAULT_REPOSITORY
    url: str = "127.0.0.1:8001"
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    device: str = "auto"


def resolve_settings(**flags: Any) -> Settings:
    """Defaults, overridden by ``FINSCORE_<NAME>`` variables, overridden by flags that are not None."""
    changes: dict[str, Any] = {}
    for f in fields(Settings):
        env = os.environ.get(f"FINSCORE_{f.name.upper()}")
        value = flags.get(f.name)
        chosen = value if value is not None else env
        if chosen is None:
            continue
        if f.type in ("int", int):
            try:
                chosen = int(chosen)
            except ValueError:
                msg = f"FINSCORE_{f.name.upper()} must be a whole number, got {chosen!r}"
                raise ValueError(msg) from None
        elif f.type in ("Path", Path):
            chosen = Path(chosen)
        changes[f.name] = chosen
    return replace(Settings(), **changes)
