"""The floor model (:mod:`bench.floor_model`) for a served model: a repository of its own, served beside it.

:func:`floor_repository` writes ``<folder>/<model>_floor/`` with the model's own ``config.pbtxt`` (renamed; a
version policy dropped, since the floor has one version) and the no-op ``model.py``. ``finscore bench`` hands the
folder to the bundled server as a second model repository, so the model's repository is never touched.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from engine.errors import ModelNotReadyError

__all__ = ["SUFFIX", "floor_repository"]

SUFFIX = "_floor"


def floor_repository(repo: Path, model: str, folder: Path) -> str:
    """Write the floor of ``model`` (its config in ``repo``) under ``folder``; the floor's model name."""
    config = Path(repo) / model / "config.pbtxt"
    if not config.is_file():
        msg = f"{config}: no config to build the floor of model {model!r} from"
        raise ModelNotReadyError(msg)
    text = config.read_text(encoding="utf-8")
    name = model + SUFFIX
    text, renamed = re.subn(r'^name:\s*"[^"]*"', f'name: "{name}"', text, count=1, flags=re.MULTILINE)
    if not renamed:
        text = f'name: "{name}"\n{text}'
    text = re.sub(r"^version_policy\s*[:{].*$", "", text, flags=re.MULTILINE)
    target = Path(folder) / name
    (target / "1").mkdir(parents=True, exist_ok=True)
    (target / "config.pbtxt").write_text(text, encoding="utf-8")
    shutil.copyfile(Path(__file__).with_name("floor_model.py"), target / "1" / "model.py")
    return name
