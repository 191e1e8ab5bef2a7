"""Erasure (GDPR art. 17): ``finscore forget ID [ID ...]`` (:mod:`engine.cli.security`) removes customers from
every store finscore keeps.

A store is a function that removes subjects from the places it keeps data and says what it removed; it
registers itself with :func:`erasure_store`::

    @erasure_store("fraud")
    def forget_cards(subjects: Sequence[str], ctx: ErasureContext) -> list[Erased]: ...

The built-in stores are the modules of :data:`BUILTIN_STORES`, imported by :func:`forget` so they register;
a store added later adds its module there. :func:`forget` runs every store, then appends one ``erasure``
line per subject and place to the audit log (:class:`engine.security.trail.Trail`), naming the subject by its keyed
pseudonym. A raw id never reaches the audit log, a printed line or an exception's message.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from engine.errors import FinscoreError, InvalidInputError

if TYPE_CHECKING:
    from engine.security.trail import Trail

__all__ = [
    "BUILTIN_STORES",
    "Erased",
    "ErasureContext",
    "ErasureReport",
    "Store",
    "erasure_store",
    "erased_subjects",
    "forget",
    "stores",
    "without_erased",
]

#: Modules whose import registers a store. A new store adds its module here.
BUILTIN_STORES = (
    "engine.families.fraud.erasure",
    "engine.families.recommender.erasure",
    "engine.families.face.erasure",
)


@dataclass(frozen=True)
class ErasureContext:
    """Where the stores look: the model repository, the running server (``url`` None: not asked, ``tls`` as
    :class:`clients.tls.Tls` or None) and the shared fraud state in Redis (None: none)."""

    repo: Path
    url: str | None = None
    tls: Any = None
    redis_url: str | None = None


@dataclass(frozen=True)
class Erased:
    """What one store removed from one place: ``removed[i]`` records of the ``i``-th subject (in the order
    given to the store). ``complete`` False: the place could not be searched, ``note`` says why."""

    store: str
    place: str
    removed: tuple[int, ...]
    note: str = ""
    complete: bool = True

    @property
    def total(self) -> int:
        return sum(self.removed)

    def line(self) -> str:
        """One line for the user: counts only, never an id."""
        n = len(self.removed)
        found = sum(1 for r in self.removed if r)
        text = f"{self.store}: {self.place}: {found} of {n} {'subject' if n == 1 else 'subjects'} found and removed"
        return f"{text} ({self.note})" if self.note else text


Store = Callable[[Sequence[str], ErasureContext], list[Erased]]
_STORES: dict[str, Store] = {}


def erasure_store(name: str) -> Callable[[Store], Store]:
    """Register the decorated function as the store ``name`` (one function per name)."""

    def register(fn: Store) -> Store:
        known = _STORES.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (fn.__module__, fn.__qualname__):
            msg = f"erasure store {name!r} is registered twice ({known.__module__} and {fn.__module__})"
            raise ValueError(msg)
        _STORES[name] = fn
        return fn

    return register


def stores() -> dict[str, Store]:
    """Every registered store by name, the built-in ones imported first."""
    for module in BUILTIN_STORES:
        importlib.import_module(module)
    return dict(_STORES)


@dataclass(frozen=True)
class ErasureReport:
    """What :func:`forget` did: per store and place, and where the audit lines went."""

    subjects: int
    results: tuple[Erased, ...]
    audit_log: Path
    audit_lines: int

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.results)

    def lines(self) -> list[str]:
        return [r.line() for r in self.results]


def _subjects(values: Sequence[str]) -> list[str]:
    """The ids once each, in order; an empty one is refused (it names nobody)."""
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            msg = f"ID number {i + 1} is empty: give the ids of the customers to erase"
            raise InvalidInputError(msg)
    return list(dict.fromkeys(values))


def _audit(trail: Trail, subjects: Sequence[str], results: Sequence[Erased]) -> int:
    pseudonyms = [trail.subject(s) for s in subjects]
    events: list[dict[str, object]] = []
    for r in results:
        for who, n in zip(pseudonyms, r.removed, strict=True):
            fields: dict[str, object] = {"subject": who, "store": r.store, "place": r.place, "removed": n}
            if not r.complete:
                fields["complete"] = False
            if r.note:
                fields["note"] = r.note
            events.append({"event": "erasure", **fields})
    if events:
        trail.log.append_many(events)  # one lock and one fsync: the erasure is recorded whole or not at all
    return len(events)


def forget(subjects: Sequence[str], ctx: ErasureContext, *, trail: Trail | None = None) -> ErasureReport:
    """Remove ``subjects`` from every registered store, then record it in the audit log.

    The audit log is opened first, so nothing is erased that could not be recorded. If a store fails, what the
    stores before it removed is recorded, with a line per subject saying the failed store is incomplete, and
    the error is raised.
    """
    from engine.security.trail import Trail

    ids = _subjects(subjects)
    trail = trail or Trail.from_env()
    results: list[Erased] = []
    for name, store in stores().items():
        try:
            done = store(ids, ctx)
        except FinscoreError as exc:
            failed = Erased(name, "*", (0,) * len(ids), f"failed: {exc}", complete=False)
            _audit(trail, ids, [*results, failed])
            raise
        for r in done:
            if len(r.removed) != len(ids):
                msg = f"erasure store {name!r} answered for {len(r.removed)} subjects, not {len(ids)}"
                raise RuntimeError(msg)
        results.extend(done)
    written = _audit(trail, ids, results)
    return ErasureReport(len(ids), tuple(results), trail.path, written)


_ERASED = re.compile(rb'"event":"erasure",.*?"subject":"([^"]+)"')


def erased_subjects(trail: Trail) -> frozenset[str]:
    """The pseudonyms of every subject ``finscore forget`` has erased: the audit log's ``erasure`` lines are the
    registry, append-only and chained, so an erasure cannot be lost or undone without it showing."""
    found = set()
    for raw in trail.log.lines():
        if b'"event":"erasure"' in raw and (m := _ERASED.search(raw)):
            found.add(m.group(1).decode("ascii"))
    return frozenset(found)


def without_erased(
    frame: pl.DataFrame, column: str, trail: Trail, *, erased: frozenset[str] | None = None
) -> tuple[pl.DataFrame, int, set[str]]:
    """``frame`` without the rows whose ``column`` names an erased subject (matched by pseudonym, as ``forget``
    recorded them), how many rows were left out, and the values they had (to count subjects across tables; never
    to print). Training reads this, so that a customer or card erased from the stores does not come back with the
    next version trained from an older file. ``erased``: :func:`erased_subjects` already read (for several
    tables)."""
    erased = erased_subjects(trail) if erased is None else erased
    if not erased or not frame.height:
        return frame, 0, set()
    from engine.security.trail import subjects_of

    values = frame.get_column(column).cast(pl.String).unique()
    gone = values.filter(subjects_of(values, trail.pseudonym_key).is_in(list(erased)))
    if not gone.len():
        return frame, 0, set()
    kept = frame.filter(~pl.col(column).cast(pl.String).is_in(gone))
    return kept, frame.height - kept.height, set(gone.to_list())
