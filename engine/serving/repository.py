"""The Triton model repository on disk: numbered versions, their artifacts, and the config beside them.

Layout, one folder per model::

    model_repo/churn/model.py          the thin python-backend shell (committed)
    model_repo/churn/config.pbtxt      written by training: inputs follow the training data
    model_repo/churn/<N>/              one trained version: model.py (a copy of the shell), artifacts

A version is written into a hidden folder and renamed into place, so Triton never sees half of one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelNotReadyError, NotFoundError
from engine.serving.config import ModelConfig, render_config

__all__ = ["DEFAULT_REPOSITORY", "ModelRepository", "VersionWriter", "fsync_dir"]


def fsync_dir(folder: Path) -> None:
    """Make a rename into ``folder`` durable (the directory's entry, not only the file's bytes, on disk)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The repository shipped with the source tree (holds the committed model.py shells).
DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repo"


@dataclass(frozen=True)
class VersionWriter:
    """A version being written: files go to ``path``; :meth:`commit` publishes it as ``version``."""

    repo: ModelRepository
    model: str
    version: int
    path: Path

    def commit(self, config: ModelConfig) -> Path:
        final = self.repo.model_dir(self.model) / str(self.version)
        self.path.rename(final)
        config_path = self.repo.model_dir(self.model) / "config.pbtxt"
        tmp = config_path.with_name(".config.pbtxt.partial")
        tmp.write_text(render_config(config), encoding="utf-8")
        tmp.replace(config_path)
        return final


def _staging(model_dir: Path, version: int | str) -> Path:
    """The hidden folder a version is written into before it is renamed into place."""
    return model_dir / f".v{version}.partial"


class ModelRepository:
    """A Triton model repository folder."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_REPOSITORY) -> None:
        self.root = Path(root).resolve()

    def model_dir(self, model: str) -> Path:
        return self.root / model

    def versions(self, model: str) -> list[int]:
        d = self.model_dir(model)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())

    def unfinished(self, model: str) -> list[Path]:
        """Versions of ``model`` being written, or left half-written by a run that stopped: their folders."""
        d = self.model_dir(model)
        return sorted(p for p in d.glob(_staging(d, "*").name) if p.is_dir()) if d.is_dir() else []

    def latest(self, model: str) -> Path:
        """The newest complete version folder of ``model``."""
        versions = [v for v in self.versions(model) if (self.model_dir(model) / str(v) / "model.py").is_file()]
        if not versions:
            msg = f"model {model!r} has no trained version in {self.root}: run `finscore train {model}` first"
            raise ModelNotReadyError(msg)
        return self.model_dir(model) / str(versions[-1])

    def trained_models(self) -> list[str]:
        """Models with a config and at least one complete version: what the server can load."""
        if not self.root.is_dir():
            return []
        ready = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and (d / "config.pbtxt").is_file():
                try:
                    self.latest(d.name)
                except ModelNotReadyError:
                    continue
                ready.append(d.name)
        return ready

    def shell(self, model: str) -> Path:
        """The committed ``model.py`` shell that each new version of ``model`` gets a copy of."""
        for base in (self.root, DEFAULT_REPOSITORY):
            candidate = base / model / "model.py"
            if candidate.is_file():
                return candidate
        msg = f"no model.py shell for model {model!r} in {self.root} or {DEFAULT_REPOSITORY}"
        raise NotFoundError(msg)

    def new_version(self, model: str, *, shell_of: str | None = None) -> VersionWriter:
        """Start writing the next version of ``model`` (the shell of ``shell_of``, default ``model``, is
        copied in first: a second threat model named ``threat_ssh`` runs the ``threat`` shell)."""
        shell = self.shell(shell_of or model)
        d = self.model_dir(model)
        d.mkdir(parents=True, exist_ok=True)
        version = (self.versions(model) or [0])[-1] + 1
        staging = _staging(d, version)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        shutil.copy2(shell, staging / "model.py")
        return VersionWriter(self, model, version, staging)
