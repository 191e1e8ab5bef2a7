"""Rolling a model version out on a running server: a shadow beside the serving version, then promote or roll back.

- **Shadow**: the new version is served under a name of its own, ``<model>_shadow`` (a folder this writes in the
  repository: the model's config renamed and pinned to the version, the version a link to the model's own folder),
  and the same rows are scored by both: a served model's sample of what it scored (:mod:`engine.serving.sample`)
  or a file. The report gives the scores' correlation, the decisions that flip, and each one's latency over gRPC.
  Not under the model's own name: Triton answers a request that names no version with the highest version it has
  loaded, so loading the new version beside the old one there would move the live traffic to it.
- **Promote**: the model's ``config.pbtxt`` is pinned to the version (``version_policy { specific }``) and Triton
  loads the model again. Triton keeps answering with the version it has until the new one is ready, then moves
  the traffic: no request fails during the switch (``python -m bench.rollout`` shows it under load). A
  feature-tensor twin (``churn_features``) with the same version moves with it.
- **Rollback**: the version served before the last promote, kept in ``<model>/rollout.json``, is promoted again.

Every step is a ``rollout`` line in the audit log. The config is shared by every version of a model and is the
one the newest training wrote: a version whose inputs or outputs differ from it cannot be served under it, and
promoting one is refused with the difference. A new training writes the config again, unpinned: the newest
version is served at the next load, as before. A stateful model (fraud) has no shadow: its answers depend on the
live state of each card, which a second copy would fork.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.errors import InvalidInputError, ModelNotReadyError, NotFoundError
from engine.families.contract import Family
from engine.families.registry import served_model
from engine.security.trail import Trail
from engine.serving.repository import ModelRepository

__all__ = [
    "Promoted",
    "ShadowReport",
    "pin_config",
    "promote",
    "rollback",
    "serving_version",
    "shadow",
    "shadow_name",
]

_POLICY = re.compile(r"^version_policy\b.*\n?", re.M)
_NAME = re.compile(r'^name: ".*"$', re.M)
_TENSOR = re.compile(r'\{ name: "([^"]+)" data_type: TYPE_(\w+) dims: \[ ([^\]]*) \]')
_WIRE = {"STRING": "BYTES"}
HISTORY = "rollout.json"


def shadow_name(model: str) -> str:
    return f"{model}_shadow"


def pin_config(text: str, version: int, *, name: str | None = None) -> str:
    """A ``config.pbtxt`` text pinned to ``version`` (and renamed to ``name``), everything else as it was."""
    text = _POLICY.sub("", text).rstrip("\n") + f"\nversion_policy: {{ specific: {{ versions: [ {version} ] }} }}\n"
    return _NAME.sub(f"name: {json.dumps(name)}", text, count=1) if name else text


@dataclass(frozen=True)
class Promoted:
    """What a promote or a rollback did: the version served before and now, and the twin moved with it."""

    model: str
    before: str
    version: str
    twin: str | None

    def line(self, action: str) -> str:
        twin = f" (and {self.twin})" if self.twin else ""
        was = f"was version {self.before}" if self.before else "it was not loaded"
        return f"{action}: {self.model}{twin} serves version {self.version} ({was})"


@dataclass(frozen=True)
class ShadowReport:
    """Agreement of a shadow version with the serving one on the same rows."""

    model: str
    serving: str
    version: str
    rows: int
    score: str
    correlation: float
    mean_change: float
    decision: str | None
    flips: int
    latency_ms: dict[str, tuple[float, float]]  # model -> (p50, p99) of one-row requests

    def lines(self) -> list[str]:
        out = [
            f"shadow of {self.model}: version {self.version} beside version {self.serving}, {self.rows:,} rows",
            f"  {self.score}: correlation {self.correlation:.4f}, mean change {self.mean_change:+.4f}",
        ]
        if self.decision is not None:
            share = self.flips / self.rows if self.rows else 0.0
            out.append(f"  {self.decision}: {self.flips:,} of {self.rows:,} rows decided otherwise ({share:.2%})")
        for who, (p50, p99) in self.latency_ms.items():
            out.append(f"  latency of one row, {who}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        return out

    def fields(self) -> dict[str, object]:
        p50 = {f"{k}_p50_ms": round(v[0], 3) for k, v in self.latency_ms.items()}
        return {
            "rows": self.rows, "correlation": round(self.correlation, 6), "flips": self.flips, **p50,
        }  # fmt: skip


@contextmanager
def _server(url: str, model: str, tls: Any = None) -> Iterator[Any]:
    """A client of the server at ``url``; its errors as finscore's one sentence (a server down, a model missing)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from clients.errors import map_error

    client = grpcclient.InferenceServerClient(url=url, **(tls.client_kwargs() if tls else {}))
    try:
        yield client
    except InferenceServerException as exc:
        raise map_error(exc, url=url, model=model, tls=tls is not None) from None
    finally:
        client.close()


def _serving(client: Any, model: str) -> str:
    """The version of ``model`` the server has ready ("" none): the highest, which unversioned requests get."""
    index = client.get_model_repository_index(as_json=True).get("models", [])
    ready = [int(m["version"]) for m in index if m.get("name") == model and m.get("state") == "READY"]
    return str(max(ready)) if ready else ""


def serving_version(url: str, model: str, *, tls: Any = None) -> str:
    """The version of ``model`` the server at ``url`` answers with (one sentence when it serves none)."""
    with _server(url, model, tls) as client:
        version = _serving(client, model)
    if not version:
        msg = f"{model} is not being served at {url}"
        raise ModelNotReadyError(msg)
    return version


def _check_version(repo: ModelRepository, model: str, version: int) -> tuple[Path, Family, Any]:
    """The version's folder, family and scorer, once its scorer's inputs and outputs are those of the model's
    config. A stateful family's scorer is not loaded (None): loading it restores, or joins, the live state, and its
    tensors are the family's own, not the training data's, so every version has the config's."""
    folder = repo.model_dir(model) / str(version)
    if not folder.is_dir():
        have = ", ".join(str(v) for v in repo.versions(model)) or "none"
        msg = f"{model} has no version {version} in {repo.root} (its versions: {have})"
        raise NotFoundError(msg)
    family, served = served_model(model, folder)
    if family.stateful:
        return folder, family, None
    scorer = served.scorer.load(folder)
    config = (repo.model_dir(model) / "config.pbtxt").read_text(encoding="utf-8")
    declared = {(n, _WIRE.get(t, t)) for n, t, _ in _TENSOR.findall(config)}
    own = {(s.name, s.datatype) for s in [*scorer.inputs, *scorer.OUTPUTS]}
    if own != declared:
        odd = sorted(n for n, _ in own ^ declared)
        msg = (
            f"{model} version {version} takes or answers other tensors than the model's config (written by the "
            f"newest training): {', '.join(odd)}; it cannot be served under that config"
        )
        raise InvalidInputError(msg)
    return folder, family, scorer


def _load(client: Any, model: str, version: str, timeout: float = 120.0) -> None:
    client.load_model(model)
    deadline = time.monotonic() + timeout
    while _serving(client, model) != version:
        if time.monotonic() > deadline:
            msg = f"{model} version {version} did not become ready within {timeout:.0f} s (see the server's log)"
            raise ModelNotReadyError(msg)
        time.sleep(0.05)


def _history(repo: ModelRepository, model: str) -> list[str]:
    path = repo.model_dir(model) / HISTORY
    return list(json.loads(path.read_text(encoding="utf-8"))["served"]) if path.is_file() else []


def _write_history(repo: ModelRepository, model: str, served: list[str]) -> None:
    path = repo.model_dir(model) / HISTORY
    tmp = path.with_name(f".{HISTORY}.partial")
    tmp.write_text(json.dumps({"served": served[-20:]}), encoding="utf-8")
    tmp.replace(path)


def _pin(repo: ModelRepository, model: str, version: int) -> None:
    config = repo.model_dir(model) / "config.pbtxt"
    tmp = config.with_name(".config.pbtxt.partial")
    tmp.write_text(pin_config(config.read_text(encoding="utf-8"), version), encoding="utf-8")
    tmp.replace(config)


def promote(
    url: str, repo: ModelRepository, model: str, version: int, *, trail: Trail, tls: Any = None, action: str = "promote"
) -> Promoted:
    """Serve ``version`` of ``model`` (and of its twin, if it has that version) on the server at ``url``."""
    from engine.families.twin import twin_name

    _check_version(repo, model, version)
    twin = twin_name(model)
    has_twin = (repo.model_dir(twin) / str(version)).is_dir() and (repo.model_dir(twin) / "config.pbtxt").is_file()
    with _server(url, model, tls) as client:
        before = _serving(client, model)
        _pin(repo, model, version)
        _load(client, model, str(version))
        if has_twin and client.is_model_ready(twin):
            _pin(repo, twin, version)
            _load(client, twin, str(version))
        else:
            has_twin = False
    served = _history(repo, model)
    if action == "promote":
        if before and (not served or served[-1] != before):
            served.append(before)
        served.append(str(version))
    _write_history(repo, model, served)
    done = Promoted(model, before, str(version), twin if has_twin else None)
    trail.event("rollout", action=action, model=model, version=str(version), before=before, twin=done.twin)
    return done


def rollback(url: str, repo: ModelRepository, model: str, *, trail: Trail, tls: Any = None) -> Promoted:
    """Serve again the version ``model`` served before its last promote."""
    served = _history(repo, model)
    if len(served) < 2:
        msg = f"{model} has no earlier version to roll back to: no promote is recorded in {repo.model_dir(model)}"
        raise NotFoundError(msg)
    served.pop()
    _write_history(repo, model, served)
    return promote(url, repo, model, int(served[-1]), trail=trail, tls=tls, action="rollback")


def shadow(
    url: str,
    repo: ModelRepository,
    model: str,
    version: int,
    rows: pl.DataFrame,
    *,
    trail: Trail,
    tls: Any = None,
    latency_rows: int = 200,
    keep: bool = False,
) -> ShadowReport:
    """Serve ``version`` as :func:`shadow_name` beside ``model``, score ``rows`` with both and compare."""
    from clients import ModelClient

    folder, family, scorer = _check_version(repo, model, version)
    if family.stateful:
        msg = f"{model} keeps state per card: a shadow would fork it; promote and roll back its versions directly"
        raise InvalidInputError(msg)
    watched = getattr(scorer, "monitored", None)
    if watched is None:
        msg = f"{model} answers no single score per row to compare"
        raise InvalidInputError(msg)
    if not rows.height:
        msg = "the rows to shadow are empty"
        raise InvalidInputError(msg)
    name = shadow_name(model)
    where = repo.root / name
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir()
    config = (repo.model_dir(model) / "config.pbtxt").read_text(encoding="utf-8")
    (where / "config.pbtxt").write_text(pin_config(config, version, name=name), encoding="utf-8")
    (where / str(version)).symlink_to(Path("..") / model / str(version), target_is_directory=True)
    try:
        with _server(url, model, tls) as client:
            serving = _serving(client, model)
            if not serving:
                msg = f"{model} is not being served at {url}: nothing to shadow"
                raise ModelNotReadyError(msg)
            _load(client, name, str(version))
            try:
                with ModelClient(url, model, tls=tls) as live, ModelClient(url, name, tls=tls) as new:
                    wanted = [watched.score, *([watched.decision] if watched.decision else [])]
                    a, b = live.infer(rows, outputs=wanted), new.infer(rows, outputs=wanted)
                    latency = _latencies({model: live, name: new}, rows.head(latency_rows))
            finally:
                client.unload_model(name)
    finally:
        if not keep:
            shutil.rmtree(where, ignore_errors=True)
    x, y = (np.asarray(o[watched.score], dtype=np.float64).reshape(-1) for o in (a, b))
    corr = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float(np.array_equal(x, y))
    flips = 0
    if watched.decision:
        flips = int(np.sum(np.asarray(a[watched.decision]).reshape(-1) != np.asarray(b[watched.decision]).reshape(-1)))
    report = ShadowReport(
        model, serving, str(version), rows.height, watched.score, corr, float(np.mean(y - x)), watched.decision,
        flips, latency,
    )  # fmt: skip
    trail.event("rollout", action="shadow", model=model, version=str(version), before=serving, **report.fields())
    return report


def _latencies(clients: dict[str, Any], rows: pl.DataFrame) -> dict[str, tuple[float, float]]:
    """p50 and p99 of one-row requests to each model, the models taking turns row by row."""
    times: dict[str, list[float]] = {name: [] for name in clients}
    for i in range(rows.height):
        row = rows.slice(i, 1)
        for name, client in clients.items():
            t0 = time.perf_counter()
            client.infer(row)
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: (float(np.percentile(t, 50)), float(np.percentile(t, 99))) for name, t in times.items()}
