"""The reason → retention action table: a CSV the user can edit (``reason,action``).

Each trained version gets ``actions.csv``: one row per feature, the action a retention team takes when
that feature is a customer's top reason. The default rows come from the feature's name; edit the file
(or pass ``finscore train churn --actions FILE``) and reload the model to change them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.errors import DataFileError

__all__ = ["NO_ACTION", "default_actions", "read_actions", "write_actions"]

#: The action for a customer below the decision threshold.
NO_ACTION = "none"

# First match wins: keywords in the lower-cased feature name.
_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("contract", "term", "commitment"), "offer a discounted 12-month contract"),
    (("charge", "price", "fee", "balance", "cost", "bill", "salary", "income"), "offer a loyalty discount"),
    (("payment", "check", "paperless"), "propose automatic payment with a bill credit"),
    (("support", "security", "protection", "complaint", "service", "backup"), "proactive service call"),
    (
        ("login", "active", "usage", "product", "streaming", "lines", "card", "digital"),
        "personalised engagement campaign",
    ),
    (("tenure", "age", "since", "month"), "enrol in the loyalty programme"),
)
_FALLBACK = "account manager outreach"


def default_actions(features: Iterable[str]) -> dict[str, str]:
    """A starting table: an action per feature, chosen from the feature's name.

    >>> default_actions(["Contract", "zzz"])
    {'Contract': 'offer a discounted 12-month contract', 'zzz': 'account manager outreach'}
    """
    table = {}
    for name in features:
        low = name.lower()
        table[name] = next((action for words, action in _RULES if any(w in low for w in words)), _FALLBACK)
    return table


def write_actions(table: Mapping[str, str], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["reason", "action"])
        writer.writerows(sorted(table.items()))


def read_actions(path: Path) -> dict[str, str]:
    """Read a ``reason,action`` CSV; a malformed file is one clear error."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        msg = f"{path}: cannot read the actions table ({exc.strerror})"
        raise DataFileError(msg) from exc
    if rows and not {"reason", "action"} <= set(rows[0]):
        msg = f"{path}: the actions table needs the columns 'reason' and 'action'"
        raise DataFileError(msg)
    return {r["reason"]: r["action"] for r in rows if r.get("reason") and r.get("action")}
