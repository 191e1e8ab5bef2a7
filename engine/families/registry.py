"""Every model family finscore serves: one line each, imported only when asked for (a family pulls in its
model library: XGBoost, ONNX Runtime, torch for training)."""

from __future__ import annotations

import importlib
from pathlib import Path

from engine.errors import NotFoundError
from engine.families.contract import Family, ServedModel

__all__ = ["FAMILIES", "families", "family", "served_model"]

#: Family name -> the module whose ``FAMILY`` declares it.
FAMILIES: dict[str, str] = {
    "churn": "engine.families.churn.family",
    "threat": "engine.families.threat.family",
    "fraud": "engine.families.fraud.family",
    "recommender": "engine.families.recommender.family",
    "segments": "engine.families.segments.family",
    "propensity": "engine.families.propensity.family",
    "assistant": "engine.families.assistant.family",
    "face": "engine.families.face.family",
}


def family(name: str) -> Family:
    """The registered family ``name``."""
    if name not in FAMILIES:
        msg = f"no model family {name!r}; the families are {', '.join(FAMILIES)}"
        raise NotFoundError(msg)
    declared = importlib.import_module(FAMILIES[name]).FAMILY
    if not isinstance(declared, Family) or declared.name != name:
        msg = f"{FAMILIES[name]}.FAMILY does not declare the family {name!r}"
        raise TypeError(msg)
    return declared


def families() -> list[Family]:
    """Every registered family, in registration order."""
    return [family(name) for name in FAMILIES]


def served_model(name: str, version_dir: Path) -> tuple[Family, ServedModel]:
    """The family and served model of the model ``name``: by name, else (a model trained under a name of its own,
    ``--name threat_ssh``) by the committed shell its version runs."""
    from engine.serving.repository import DEFAULT_REPOSITORY

    seen = []
    for family_name in FAMILIES:
        fam = family(family_name)
        seen.append(fam)
        for served in fam.served:
            if served.name == name:
                return fam, served
    shell = (version_dir / "model.py").read_bytes()
    for fam in seen:
        for served in fam.served:
            committed = DEFAULT_REPOSITORY / served.name / "model.py"
            if committed.is_file() and committed.read_bytes() == shell:
                return fam, served
    shells = ", ".join(FAMILIES)
    msg = f"model {name!r} runs the shell of none of the families {shells} ({version_dir / 'model.py'})"
    raise NotFoundError(msg)
