"""Settings resolved once: command-line flag > environment (``FINSCORE_*``) > defaults.

Every ``FINSCORE_*`` variable finscore reads is a field of :class:`Settings` (``FINSCORE_<FIELD>``), and only
:func:`resolve_settings` reads them: one setting read in one place, with one rule for blanks (a blank variable is
unset) and one error for a bad value. It reads ``os.environ`` each time it is called, never at import, so a
library module asks it where the value is needed (``resolve_settings().fraud_redis``) and a test that changes the
environment is seen. The README's "Settings" table lists the fields; a unit test keeps both in step.
"""

from __future__ import annotations

import os
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.serving.repository import DEFAULT_REPOSITORY

__all__ = ["PREFIX", "Settings", "env_name", "resolve_settings"]

PREFIX = "FINSCORE_"
_TRUE = frozenset({"1", "true", "yes"})


def _setting(default: Any, doc: str, *, flag: str | None = None, secret: bool = False) -> Any:
    """A field with its one-line ``doc`` and command-line ``flag``; a ``secret`` one is left out of ``repr``."""
    return field(default=default, repr=not secret, metadata={"doc": doc, "flag": flag})


@dataclass(frozen=True)
class Settings:
    """Where finscore finds its models, server, records and keys; each field is ``FINSCORE_<FIELD>``."""

    repo: Path = _setting(DEFAULT_REPOSITORY, "the model repository folder", flag="--repo")
    url: str = _setting("127.0.0.1:8001", "the server's gRPC address HOST:PORT that clients call", flag="--url")
    host: str = _setting("127.0.0.1", "the address `finscore serve` listens on (0.0.0.0 for all)", flag="--host")
    grpc_port: int = _setting(8001, "the served gRPC port", flag="--grpc-port")
    http_port: int = _setting(8000, "the served HTTP port", flag="--http-port")
    metrics_port: int = _setting(8002, "the served metrics port", flag="--metrics-port")
    device: str = _setting("auto", "auto, cpu or gpu: where training and in-process scoring run", flag="--device")
    require_gpu: bool = _setting(False, "1, true or yes: a CPU fallback (no GPU, or a GPU path that fails) is an error")
    home: Path | None = _setting(
        None, "the folder of finscore's own records (default $XDG_STATE_HOME/finscore, else ~/.local/state/finscore)"
    )
    audit_log: Path | None = _setting(None, "the audit log file (default audit.jsonl in FINSCORE_HOME)")
    audit_key_file: Path | None = _setting(
        None, "the key (32 raw bytes or 64 hex) that chains the audit log with HMAC-SHA-256", flag="--key-file"
    )
    pseudonym_key_file: Path | None = _setting(
        None, "the key of the audit log's subject pseudonyms (default pseudonym.key in FINSCORE_HOME)"
    )
    protect_keys: str | None = _setting(
        None, "protection key lines `v<N> <64 hex>`, `;`-separated, when no --keys FILE is given", secret=True
    )
    retry_for: int = _setting(
        30,
        "seconds a client sends again a request the server could not take (server restarting, model reloading); "
        "0: never",
    )
    fraud_redis: str | None = _setting(
        None, "a Redis URL (redis://HOST:PORT/DB) holding the fraud model's shared state", flag="--fraud-redis"
    )
    cpus: str | None = _setting(
        None,
        "the CPUs `finscore serve` runs Triton and its models on, as taskset writes them (0, 0-3 or 0,2-3); "
        "default: every CPU",
        flag="--cpus",
    )
    metrics: bool = _setting(
        True,
        "1, true or yes (the default): served models count their scores, decisions and refusals on Triton's "
        "metrics port; 0, false or no: they do not",
    )
    metrics_flush_ms: int = _setting(1000, "how often a served model sends its counts to the metrics port, in ms")
    sample: str | None = _setting(
        None, "served models that keep a sample of what they score (`churn,fraud`, or `all`); none by default"
    )
    sample_every: int = _setting(100, "a sampling model keeps one scored row in this many")
    sample_rows: int = _setting(10_000, "rows per Parquet part of a model's sample")
    sample_parts: int = _setting(10, "parts of a model's sample kept (the oldest is removed)")
    max_row_bytes: int = _setting(
        8 << 20,
        "the longest CSV row `score` and `scan` read, in bytes; a longer one is rejected by its number and size, the "
        "rest scored",
        flag="--max-row-bytes",
    )


def env_name(name: str) -> str:
    """The environment variable of the field ``name``: ``FINSCORE_`` + its name in capitals.

    >>> env_name("fraud_redis")
    'FINSCORE_FRAUD_REDIS'
    """
    return PREFIX + name.upper()


def _convert(f: Field[Any], value: Any) -> Any:
    kind = str(f.type).removesuffix(" | None")
    if kind == "int" and not isinstance(value, int):
        try:
            return int(value)
        except ValueError:
            msg = f"{env_name(f.name)} must be a whole number, got {value!r}"
            raise UsageError(msg) from None
    if kind == "bool" and not isinstance(value, bool):
        return str(value).lower() in _TRUE
    if kind == "Path":
        return Path(value)
    return value


def resolve_settings(**flags: Any) -> Settings:
    """Defaults, overridden by ``FINSCORE_<NAME>`` variables that are not blank, overridden by flags that are not
    None. A flag that is not a field is refused (a typo would otherwise be ignored)."""
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(flags) - set(known))
    if unknown:
        msg = f"resolve_settings got {', '.join(unknown)}, which are not fields of Settings"
        raise TypeError(msg)
    changes: dict[str, Any] = {}
    for name, f in known.items():
        chosen = flags.get(name)
        if chosen is None:
            chosen = os.environ.get(env_name(name), "").strip() or None
        if chosen is not None:
            changes[name] = _convert(f, chosen)
    return replace(Settings(), **changes)
