"""A budgeted marketing campaign: whom to contact with which offer, and the message each contact gets.

The plan reads a customer table and an offers file and chooses contacts by expected value
(``propensity × value − cost``, :mod:`engine.marketing.selection`) under the budget, each offer's capacity and a
cap of contacts per customer. It then compares itself with contacting at random under the same limits, so a
plan's worth is a figure, not a claim.

Consent comes first: a customer is a candidate only when the consent column (default ``marketing_consent``)
holds ``true``, ``1``, ``yes`` or ``y`` (any case); ``false``, empty, null or any other text is no consent. A
table without the column is refused: no consent information, no contact. Customers without consent are not
even scored.

Where a propensity comes from, per offer, first found wins:

1. a customers column ``propensity_<offer>``;
2. a column ``propensity``, when the offers file has one offer;
3. the offer's ``model`` (default ``propensity``): its latest version in the model repository, run in this
   process on the table's columns, as :mod:`engine.batch.score` runs a scorer.

A missing propensity (null) leaves that customer out of that offer. The segment of a contact is the table's
``segment_name`` column, else the answer of the repository's ``segments`` model when it has a trained version,
else :data:`NO_SEGMENT`.

The offers file is a CSV: ``offer, value, cost`` required, ``capacity`` (blank: unlimited) and ``model``
optional. Nothing here logs a customer's values: the printed lines are counts and sums.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from engine.errors import DataFileError, NotFoundError, UsageError
from engine.marketing.selection import Candidates, Limits, Method, Selection, random_plan, select
from engine.marketing.templates import MessageTemplates
from engine.tables.io import require_columns

if TYPE_CHECKING:
    from engine.families.contract import Scorer

__all__ = [
    "CONSENT_VALUES",
    "DEFAULT_MODEL",
    "NO_SEGMENT",
    "OUTPUT_COLUMNS",
    "CampaignPlan",
    "Offer",
    "Totals",
    "consent_mask",
    "plan_campaign",
    "read_offers",
]

#: Consent column values (trimmed, any case) that are consent; anything else is none.
CONSENT_VALUES = frozenset(("true", "1", "yes", "y"))
DEFAULT_MODEL = "propensity"
SEGMENT_MODEL = "segments"
#: The segment of every contact when neither the table nor the repository gives one.
NO_SEGMENT = "all"
#: The output columns after the customer id column.
OUTPUT_COLUMNS = ("offer", "propensity", "expected_value", "cost", "segment", "message")
_SCORE_ROWS = 16_384


@dataclass(frozen=True)
class Offer:
    """A line of the offers file: what a contact is worth when it converts, what it costs, how many it may have."""

    name: str
    value: float
    cost: float
    capacity: int | None = None
    model: str = DEFAULT_MODEL


def _number(p: Path, line: int, column: str, text: str, *, whole: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (whole and not value.is_integer()):
        kind = "a whole number" if whole else "a number"
        msg = f"{p} line {line}: {column} must be {kind} of at least 0, got {text!r}"
        raise DataFileError(msg)
    return value


def read_offers(path: str | os.PathLike[str]) -> list[Offer]:
    """The offers of a CSV file; a fault is one sentence naming the line and column."""
    p = Path(path)
    if not p.is_file():
        msg = f"{p}: no such offers file"
        raise DataFileError(msg)
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        missing = [c for c in ("offer", "value", "cost") if c not in header]
        if missing:
            msg = f"{p}: the offers file lacks the column {missing[0]!r} (it needs offer, value, cost)"
            raise DataFileError(msg)
        offers: list[Offer] = []
        for row in reader:
            line = reader.line_num
            cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if not any(cells.values()):
                continue
            name = cells["offer"]
            if not name:
                msg = f"{p} line {line}: the offer has no name"
                raise DataFileError(msg)
            if any(o.name == name for o in offers):
                msg = f"{p} line {line}: offer {name!r} is listed twice"
                raise DataFileError(msg)
            capacity = cells.get("capacity", "")
            offers.append(
                Offer(
                    name,
                    _number(p, line, "value", cells["value"]),
                    _number(p, line, "cost", cells["cost"]),
                    int(_number(p, line, "capacity", capacity, whole=True)) if capacity else None,
                    cells.get("model") or DEFAULT_MODEL,
                )
            )
    if not offers:
        msg = f"{p}: the offers file lists no offer"
        raise DataFileError(msg)
    return offers


def consent_mask(customers: pl.DataFrame, column: str) -> np.ndarray:
    """Whether each customer consented to marketing (see :data:`CONSENT_VALUES`); no column: refused."""
    if column not in customers.columns:
        msg = f"the customers have no consent column {column!r} (--consent): no consent information, no contact"
        raise DataFileError(msg)
    col = customers.get_column(column)
    if col.dtype.is_numeric():
        given = col == 1
    else:
        given = col.cast(pl.String).str.strip_chars().str.to_lowercase().is_in(list(CONSENT_VALUES))
    return given.fill_null(False).to_numpy().astype(bool)


def _request(frame: pl.DataFrame, scorer: Scorer) -> dict[str, np.ndarray]:
    """The table's rows as the ``[rows, 1]`` arrays a served model gets (FP32 numbers, UTF-8 bytes text)."""
    inputs = scorer.inputs
    require_columns(frame.columns, [spec.name for spec in inputs], source="customers")
    arrays = {}
    for spec in inputs:
        col = frame.get_column(spec.name)
        if spec.datatype == "FP32":
            arrays[spec.name] = col.cast(pl.Float32, strict=False).fill_null(math.nan).to_numpy().reshape(-1, 1)
        else:
            text = col.cast(pl.String).fill_null("").to_list()
            arrays[spec.name] = np.array([t.encode("utf-8") for t in text], dtype=object).reshape(-1, 1)
    return arrays


def _score_with_model(frame: pl.DataFrame, model: str, output: str, repo: Path | None) -> np.ndarray:
    """The ``output`` of the latest version of ``model`` for every row of ``frame``, in this process."""
    from engine.families.registry import served_model
    from engine.serving.repository import DEFAULT_REPOSITORY, ModelRepository

    version_dir = ModelRepository(repo or DEFAULT_REPOSITORY).latest(model)
    _, served = served_model(model, version_dir)
    scorer = served.scorer.load(version_dir)
    if output not in {spec.name for spec in scorer.OUTPUTS}:
        msg = f"model {model!r} has no output {output!r}"
        raise NotFoundError(msg)
    parts = []
    for start in range(0, frame.height, _SCORE_ROWS):
        rows = scorer.validate(_request(frame.slice(start, _SCORE_ROWS), scorer))
        parts.append(np.asarray(scorer.score_rows(rows, outputs=[output])[output]).reshape(-1))
    return np.concatenate(parts) if parts else np.empty(0)


def _propensities(
    customers: pl.DataFrame, offers: Sequence[Offer], allowed: np.ndarray, repo: Path | None
) -> tuple[np.ndarray, list[str]]:
    """``[customers, offers]`` propensities (NaN: none, and for every customer not ``allowed``) and, per offer,
    where they came from."""
    out = np.full((customers.height, len(offers)), np.nan)
    sources = []
    scored: dict[str, np.ndarray] = {}
    rows = np.flatnonzero(allowed)
    for o, offer in enumerate(offers):
        column = f"propensity_{offer.name}"
        if column not in customers.columns and len(offers) == 1 and "propensity" in customers.columns:
            column = "propensity"
        if column in customers.columns:
            col = customers.get_column(column)
            if not col.dtype.is_numeric():
                msg = f"customers column {column!r} must hold numbers between 0 and 1, it holds {col.dtype}"
                raise DataFileError(msg)
            values = col.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64)
            if ((values < 0) | (values > 1)).any():  # NaN compares false
                msg = f"customers column {column!r} must hold numbers between 0 and 1; some are outside"
                raise DataFileError(msg)
            out[rows, o] = values[rows]
            sources.append(f"column {column}")
            continue
        if offer.model not in scored:
            scored[offer.model] = _score_with_model(customers[rows], offer.model, "propensity", repo)
        out[rows, o] = scored[offer.model]
        sources.append(f"model {offer.model}")
    return out, sources


def _segments(customers: pl.DataFrame, repo: Path | None) -> tuple[list[str], str]:
    """The segment name of each customer of ``customers`` and where the names came from."""
    from engine.serving.repository import DEFAULT_REPOSITORY, ModelRepository

    if "segment_name" in customers.columns:
        names = customers.get_column("segment_name").cast(pl.String).fill_null(NO_SEGMENT).to_list()
        return names, "column segment_name"
    repository = ModelRepository(repo or DEFAULT_REPOSITORY)
    if not repository.versions(SEGMENT_MODEL) or customers.height == 0:
        return [NO_SEGMENT] * customers.height, "none"
    names = _score_with_model(customers, SEGMENT_MODEL, "segment_name", repo)
    text = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in names.tolist()]
    return text, f"model {SEGMENT_MODEL}"


@dataclass(frozen=True)
class Totals:
    """What a plan adds up to (for random contact: the mean over the draws)."""

    contacts: float
    cost: float
    expected_value: float

    @classmethod
    def of(cls, c: Candidates, chosen: np.ndarray) -> Totals:
        return cls(float(len(chosen)), float(c.cost[chosen].sum()), float(c.expected_value[chosen].sum()))


@dataclass(frozen=True)
class CampaignPlan:
    """A plan: its contacts (one row each, :data:`OUTPUT_COLUMNS` after the id column), totals, and the random
    comparison."""

    contacts: pl.DataFrame
    totals: Totals
    random: Totals
    random_draws: int
    selection: Selection
    budget: float
    customers: int
    consenting: int
    sources: Mapping[str, str]

    @property
    def lift(self) -> float | None:
        """The plan's expected value over random contact's, when random's is positive."""
        return self.totals.expected_value / self.random.expected_value if self.random.expected_value > 0 else None

    def lines(self) -> list[str]:
        """What ``finscore campaign plan`` prints: counts and sums, no customer's values."""
        t, r, s = self.totals, self.random, self.selection
        how = "linear relaxation, rounded" if s.method == "lp" else "greedy by value per unit of cost"
        gap = ""
        if s.bound is not None and s.bound > 0:
            gap = f", at most {max(0.0, (s.bound - t.expected_value) / s.bound):.3%} below the best possible plan"
        lift = f"{self.lift:.2f}× random's" if self.lift is not None else "random's is not positive"
        return [
            f"customers: {self.customers:,}, of whom {self.consenting:,} consent to marketing "
            f"({self.customers - self.consenting:,} without consent: never contacted)",
            "sources: " + "; ".join(f"{k}: {v}" for k, v in self.sources.items()),
            f"plan:   {t.contacts:,.0f} contacts, cost {t.cost:,.2f} of {self.budget:,.2f}, "
            f"expected value {t.expected_value:,.2f} ({how}{gap}; {s.seconds:.1f} s)",
            f"random: {r.contacts:,.1f} contacts, cost {r.cost:,.2f}, expected value {r.expected_value:,.2f} "
            f"(same budget and limits, mean of {self.random_draws} seeded draws)",
            f"plan vs random: {t.expected_value - r.expected_value:+,.2f} expected value ({lift})",
        ]


def plan_campaign(
    customers: pl.DataFrame,
    offers: Sequence[Offer],
    *,
    budget: float,
    max_contacts_per_customer: int = 1,
    id_column: str = "customer_id",
    consent_column: str = "marketing_consent",
    templates: MessageTemplates | None = None,
    repo: Path | None = None,
    method: Method = "lp",
    random_draws: int = 5,
    seed: int = 0,
) -> CampaignPlan:
    """Choose a campaign's contacts and write their messages (see the module's docstring).

    ``repo`` is the model repository for propensities and segments the table does not hold (None: the default
    one). Contacts are ordered by expected value, highest first, then by customer id and offer.
    """
    if not budget > 0 or not math.isfinite(budget):
        msg = f"--budget must be a number above 0, got {budget:g}"
        raise UsageError(msg)
    if max_contacts_per_customer < 1 or random_draws < 1:
        msg = "--max-contacts-per-customer and --random-draws must be at least 1"
        raise UsageError(msg)
    require_columns(customers.columns, [id_column], source="customers")
    ids = customers.get_column(id_column)
    if ids.null_count() or ids.n_unique() != customers.height:
        msg = f"customers column {id_column!r} must name each customer once, with no blanks"
        raise DataFileError(msg)
    customers = customers.sort(id_column)  # the order that breaks ties
    allowed = consent_mask(customers, consent_column)
    templates = templates or MessageTemplates.load()
    templates.check(customers.columns, [o.name for o in offers])

    propensity, sources = _propensities(customers, offers, allowed, repo)
    value = np.array([o.value for o in offers])
    cost = np.array([o.cost for o in offers])
    c = Candidates.build(propensity, value, cost, allowed)
    limits = Limits(budget, [o.capacity for o in offers], max_contacts_per_customer)
    selection = select(c, limits, method=method)
    rng = np.random.default_rng(seed)
    draws = [Totals.of(c, random_plan(c, limits, rng)) for _ in range(random_draws)]
    random = Totals(*(float(np.mean([getattr(d, f) for d in draws])) for f in ("contacts", "cost", "expected_value")))

    chosen = selection.chosen
    contacted = customers[c.customer[chosen]]
    segments, segment_source = _segments(contacted, repo)
    names = [offers[o].name for o in c.offer[chosen].tolist()]
    messages = [
        templates.render(segment, offer, row)
        for segment, offer, row in zip(segments, names, contacted.iter_rows(named=True), strict=True)
    ]
    contacts = pl.DataFrame(
        {
            id_column: contacted.get_column(id_column),
            "offer": pl.Series(names, dtype=pl.String),
            "propensity": c.propensity[chosen],
            "expected_value": c.expected_value[chosen],
            "cost": c.cost[chosen],
            "segment": pl.Series(segments, dtype=pl.String),
            "message": pl.Series(messages, dtype=pl.String),
        }
    )
    order = np.lexsort((c.offer[chosen], c.customer[chosen], -c.expected_value[chosen]))
    described = {o.name: s for o, s in zip(offers, sources, strict=True)} | {"segment": segment_source}
    return CampaignPlan(
        contacts=contacts[order],
        totals=Totals.of(c, chosen),
        random=random,
        random_draws=random_draws,
        selection=selection,
        budget=float(budget),
        customers=customers.height,
        consenting=int(allowed.sum()),
        sources=described,
    )
