"""Every model family finscore serves: one line each, imported only when asked for (a family pulls in its
model library: XGBoost, ONNX Runtime, torch for training)."""

from __future__ import annotations

import importlib

from engine.errors import NotFoundError
from engine.families.contract import Family

__all__ = ["FAMILIES", "families", "family"]

#: Family name -> the module whose ``FAMILY`` declares it.
FAMILIES: dict[str, str] = {
    "churn": "engine.families.churn.family",
    "threat": "engine.families.threat.family",
    "fraud": "engine.families.fraud.family",
    "recommender": "engine.families.recommender.family",
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
