"""Suitability rules: which products a customer may be recommended, as data (``rules.json`` in each version).

A bank may never recommend a product the customer is not suited for (MiFID II suitability, FINRA Rule 2111):
risk above their tolerance, a horizon longer than theirs, a minimum investment above what they can place. The
rules are a JSON file written with every version, editable there (the served model reads it at load), so a
compliance officer changes a threshold without a retrain. Each rule compares a product column with a customer
field::

    {"name": "risk", "product": "risk_level", "op": "<=", "customer": "risk_tolerance"}
    {"name": "ticket", "product": "min_investment", "op": "<=", "customer": "income_band",
     "values": {"low": 1000, "middle": 5000, "high": 25000, "very_high": 1e15}}

``values`` maps a text field to a number first. A customer field that is missing (NaN, empty, or a text value
``values`` does not list) makes every product unsuitable under that rule: the rules fail closed. A product
column a version's catalogue lacks is refused at load, with the rule's name. ``diversification`` caps the share
of one ``column`` value in a list (``max_share`` of ``k``, at least one).
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelNotReadyError

__all__ = ["DEFAULT_RULES", "RULES_FILE", "Diversification", "Rule", "Rules"]

RULES_FILE = "rules.json"

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}

#: The rules a version gets when training is given none (and the catalogue has their columns).
DEFAULT_RULES: dict[str, Any] = {
    "rules": [
        {"name": "risk", "product": "risk_level", "op": "<=", "customer": "risk_tolerance"},
        {"name": "horizon", "product": "min_horizon_years", "op": "<=", "customer": "horizon_years"},
        {
            "name": "ticket",
            "product": "min_investment",
            "op": "<=",
            "customer": "income_band",
            "values": {"low": 1000, "middle": 5000, "high": 25000, "very_high": 1e15},
        },
    ],
    "diversification": {"column": "asset_class", "max_share": 0.4},
}


@dataclass(frozen=True)
class Rule:
    name: str
    product: str
    op: str
    customer: str
    values: Mapping[str, float] = field(default_factory=dict)

    def customer_value(self, profile: Mapping[str, Any]) -> float:
        """The customer's side of the comparison as a number; NaN when missing (fails closed)."""
        raw = profile.get(self.customer)
        if self.values:
            return float(self.values.get(str(raw), math.nan)) if raw not in (None, "") else math.nan
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return math.nan
        return value


@dataclass(frozen=True)
class Diversification:
    column: str
    max_share: float

    def cap(self, k: int) -> int:
        """How many products of one value a list of ``k`` may hold."""
        return max(1, math.floor(self.max_share * k))


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    diversification: Diversification | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "rules") -> Rules:
        try:
            rules = tuple(
                Rule(
                    str(r["name"]),
                    str(r["product"]),
                    str(r["op"]),
                    str(r["customer"]),
                    {str(k): float(v) for k, v in r.get("values", {}).items()},
                )
                for r in data.get("rules", [])
            )
            div = data.get("diversification")
            diversification = Diversification(str(div["column"]), float(div["max_share"])) if div else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = (
                f"{source}: a rule is malformed ({type(exc).__name__}: {exc}); see engine/families/recommender/rules.py"
            )
            raise ModelNotReadyError(msg) from None
        for rule in rules:
            if rule.op not in _OPS:
                msg = f"{source}: rule {rule.name!r} has operator {rule.op!r}; expected one of {', '.join(_OPS)}"
                raise ModelNotReadyError(msg)
        if diversification is not None and not 0 < diversification.max_share <= 1:
            msg = f"{source}: diversification max_share must be in (0, 1], got {diversification.max_share}"
            raise ModelNotReadyError(msg)
        return cls(rules, diversification)

    @classmethod
    def read(cls, path: Path) -> Rules:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"{path}: the suitability rules cannot be read ({type(exc).__name__})"
            raise ModelNotReadyError(msg) from None
        return cls.from_dict(data, source=str(path))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rules": [
                {"name": r.name, "product": r.product, "op": r.op, "customer": r.customer}
                | ({"values": dict(r.values)} if r.values else {})
                for r in self.rules
            ]
        }
        if self.diversification is not None:
            d = self.diversification
            out["diversification"] = {"column": d.column, "max_share": d.max_share}
        return out

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    def for_catalogue(self, columns: Sequence[str]) -> Rules:
        """The rules whose product column the catalogue has (training without one keeps only those)."""
        have = set(columns)
        div = self.diversification if self.diversification and self.diversification.column in have else None
        return Rules(tuple(r for r in self.rules if r.product in have), div)

    def check_catalogue(self, columns: Sequence[str], *, source: str) -> None:
        have = set(columns)
        for rule in self.rules:
            if rule.product not in have:
                msg = f"{source}: rule {rule.name!r} reads product column {rule.product!r}, which the catalogue lacks"
                raise ModelNotReadyError(msg)
        if self.diversification is not None and self.diversification.column not in have:
            msg = f"{source}: diversification reads {self.diversification.column!r}, which the catalogue lacks"
            raise ModelNotReadyError(msg)

    @property
    def customer_fields(self) -> list[str]:
        return list(dict.fromkeys(r.customer for r in self.rules))

    def order_keys(self, catalogue: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Per ordering rule (``<``, ``<=``, ``>``, ``>=``), in rule order, a key under which the products it
        allows come first for any customer (the rule's column, negated for ``>=`` and ``>``). Products sorted by
        these keys in turn lie, for any customer, in runs that every rule allows or in runs that one refuses."""
        keys = []
        for rule in self.rules:
            if rule.op in ("<=", "<"):
                keys.append(np.asarray(catalogue[rule.product], dtype=np.float64))
            elif rule.op in (">=", ">"):
                keys.append(-np.asarray(catalogue[rule.product], dtype=np.float64))
        return keys

    def suitable(self, catalogue: Mapping[str, np.ndarray], profile: Mapping[str, Any]) -> np.ndarray:
        """Bool per product: every rule holds for this customer (NaN on either side: unsuitable)."""
        n = len(next(iter(catalogue.values()))) if catalogue else 0
        ok = np.ones(n, dtype=bool)
        with np.errstate(invalid="ignore"):  # once, not per rule: entering it cost as much as a comparison
            for rule in self.rules:
                value = rule.customer_value(profile)
                if math.isnan(value):
                    return np.zeros(n, dtype=bool)
                ok &= _OPS[rule.op](catalogue[rule.product], value)
        return ok
