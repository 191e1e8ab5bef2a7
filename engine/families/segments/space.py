"""The space customers are clustered in: numbers standardised, categories one-hot, missing values neutral.

A customer row becomes one float32 vector, built from the schema's feature kernels
(:meth:`engine.tables.schema.TableSchema.features`: numbers, yes/no as 1/0, category codes):

- a number column becomes its z-score against the training table, clipped to ±:data:`CLIP`, so that a handful
  of extreme balances cannot claim a segment of their own; missing is 0, the table's mean. A column of
  non-negative numbers with a long right tail (skewness above :data:`SKEWED`: balances, incomes) is taken as
  ``log1p`` first: in raw units its z-scores pile up near -0.3 and k-means splits on the tail alone;
- a yes/no column stays 1/0 (missing: the table's share of yes), on the scale of a category's indicators;
- a category column becomes one 0/1 indicator per value of its vocabulary; missing, and a value the training
  table never had, become the table's shares of each value (the category counterpart of the mean), so such a
  row is pulled towards no segment by that column.

The :class:`SegmentSpace` is saved in the version's ``segments.json``; the scorer rebuilds it from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.tables.schema import TableSchema

__all__ = ["CLIP", "SKEWED", "Profile", "SegmentSpace"]

CLIP = 3.0
SKEWED = 2.0


@dataclass(frozen=True)
class Profile:
    """A segment (or the whole table) in the columns' own terms: the mean of each number column and the share of
    each category value (and, for non-negative number columns, the mean of ``log1p``: where a segment sits on a
    logged column). Kept in ``segments.json``: what a retrain matches its segments against."""

    means: dict[str, float]
    shares: dict[str, dict[str, float]]
    log_means: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"means": self.means, "shares": self.shares, "log_means": self.log_means}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Profile:
        return cls(
            {k: float(v) for k, v in raw["means"].items()},
            {c: {k: float(v) for k, v in shares.items()} for c, shares in raw["shares"].items()},
            {k: float(v) for k, v in raw.get("log_means", {}).items()},
        )


@dataclass(frozen=True)
class SegmentSpace:
    """Standardisation and one-hot layout of a schema's columns, learned from the training table."""

    schema: TableSchema
    #: Mean and standard deviation of each number column (after ``log1p`` where logged), as the feature kernels
    #: read it; a yes/no column's mean is its share of yes (and its deviation 1: it is not scaled).
    means: dict[str, float]
    stds: dict[str, float]
    #: The training table's share of each value of each category column, in vocabulary order.
    shares: dict[str, tuple[float, ...]]
    #: Number columns taken as ``log1p``.
    logged: tuple[str, ...] = ()

    @classmethod
    def fit(cls, schema: TableSchema, x: np.ndarray) -> SegmentSpace:
        """Learn the space from the feature matrix ``x`` (:meth:`TableSchema.features`) of the training table."""
        means, stds, shares, logged = {}, {}, {}, []
        for j, col in enumerate(schema.columns):
            v = x[:, j].astype(np.float64)
            known = v[~np.isnan(v)]
            if col.kind == "categorical":
                counts = np.bincount(known.astype(np.int64), minlength=len(col.vocabulary))
                shares[col.name] = tuple(float(c) for c in counts / max(counts.sum(), 1))
                continue
            if col.kind == "numeric" and len(known) > 2 and known.min() >= 0 and _skewness(known) > SKEWED:
                logged.append(col.name)
                known = np.log1p(known)
            means[col.name] = float(known.mean()) if len(known) else 0.0
            std = float(known.std()) if len(known) else 0.0
            stds[col.name] = std if std > 0 and col.kind == "numeric" else 1.0
        return cls(schema, means, stds, shares, tuple(logged))

    @property
    def dimensions(self) -> list[tuple[str, str | None]]:
        """Each dimension of the space: ``(column, None)`` for a number, ``(column, value)`` for an indicator."""
        dims: list[tuple[str, str | None]] = []
        for col in self.schema.columns:
            if col.kind == "categorical":
                dims.extend((col.name, v) for v in col.vocabulary)
            else:
                dims.append((col.name, None))
        return dims

    @property
    def groups(self) -> np.ndarray:
        """The schema column of each dimension (its index), for sums per column."""
        return np.array(
            [j for j, c in enumerate(self.schema.columns) for _ in (c.vocabulary if c.kind == "categorical" else (0,))]
        )

    @property
    def centre(self) -> np.ndarray:
        """The whole table in the space: 0 for numbers, the shares of yes and of each category value."""
        logged = {name: self.means[name] for name in self.logged}
        return self.vector(Profile(self.means, self.value_shares(), logged))

    def value_shares(self) -> dict[str, dict[str, float]]:
        return {
            c.name: dict(zip(c.vocabulary, self.shares[c.name], strict=True))
            for c in self.schema.columns
            if c.kind == "categorical"
        }

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Feature matrix (schema kernels' output) → points of the space, float32 ``[rows, dimensions]``."""
        parts = []
        for j, col in enumerate(self.schema.columns):
            v = x[:, j]
            if col.kind == "categorical":
                n = len(col.vocabulary)
                share = np.asarray(self.shares[col.name], dtype=np.float32)
                onehot = np.empty((len(v), n), dtype=np.float32)
                known = ~np.isnan(v)
                onehot[~known] = share
                onehot[known] = np.eye(n, dtype=np.float32)[v[known].astype(np.int64)]
                parts.append(onehot)
            elif col.kind == "boolean":
                parts.append(np.where(np.isnan(v), np.float32(self.means[col.name]), v).reshape(-1, 1))
            else:
                if col.name in self.logged:
                    v = np.log1p(np.maximum(v, 0))
                z = (v - np.float32(self.means[col.name])) / np.float32(self.stds[col.name])
                parts.append(np.clip(np.nan_to_num(z, nan=0.0), -CLIP, CLIP).reshape(-1, 1))
        return np.ascontiguousarray(np.hstack(parts), dtype=np.float32)

    def profile(self, x: np.ndarray) -> Profile:
        """The profile of the rows of feature matrix ``x`` (missing values left out of each figure)."""
        means, shares, log_means = {}, {}, {}
        for j, col in enumerate(self.schema.columns):
            v = x[:, j].astype(np.float64)
            known = v[~np.isnan(v)]
            if col.kind == "categorical":
                counts = np.bincount(known.astype(np.int64), minlength=len(col.vocabulary))
                total = max(int(counts.sum()), 1)
                shares[col.name] = {val: float(c) / total for val, c in zip(col.vocabulary, counts, strict=True)}
                continue
            means[col.name] = float(known.mean()) if len(known) else float("nan")
            if col.kind == "numeric" and (not len(known) or known.min() >= 0):
                log_means[col.name] = float(np.log1p(known).mean()) if len(known) else float("nan")
        return Profile(means, shares, log_means)

    def vector(self, profile: Profile, *, dims: Sequence[tuple[str, str | None]] | None = None) -> np.ndarray:
        """A profile as a point of this space, unclipped (numbers as z-scores, yes/no and categories as shares), over
        ``dims`` (default: every dimension); a dimension the profile lacks is NaN."""
        out = []
        yes_no = {c.name for c in self.schema.columns if c.kind == "boolean"}
        for name, value in dims if dims is not None else self.dimensions:
            if name in yes_no:
                out.append(profile.means.get(name, np.nan))
            elif value is None:
                mean = (profile.log_means if name in self.logged else profile.means).get(name)
                out.append(np.nan if mean is None else (mean - self.means[name]) / self.stds[name])
            else:
                out.append(profile.shares.get(name, {}).get(value, np.nan))
        return np.array(out, dtype=np.float64)

    def z_scores(self, profile: Profile) -> np.ndarray:
        """How far a profile stands from the whole table in each dimension, in standard deviations: a number's
        z-score; for a category value, its share's distance from the table's share in units of the indicator's
        standard deviation."""
        z = self.vector(profile)
        centre = self.centre
        yes_no = {c.name for c in self.schema.columns if c.kind == "boolean"}
        for i, (name, value) in enumerate(self.dimensions):
            if value is not None or name in yes_no:
                p = centre[i]
                z[i] = (z[i] - p) / np.sqrt(p * (1 - p)) if 0 < p < 1 else 0.0
        return z

    def as_dict(self) -> dict[str, Any]:
        shares = {k: list(v) for k, v in self.shares.items()}
        return {"means": self.means, "stds": self.stds, "shares": shares, "logged": list(self.logged)}

    @classmethod
    def from_dict(cls, schema: TableSchema, raw: Mapping[str, Any]) -> SegmentSpace:
        return cls(
            schema,
            {k: float(v) for k, v in raw["means"].items()},
            {k: float(v) for k, v in raw["stds"].items()},
            {k: tuple(float(s) for s in v) for k, v in raw["shares"].items()},
            tuple(raw.get("logged", ())),
        )


def _skewness(v: np.ndarray) -> float:
    sd = v.std()
    return float(((v - v.mean()) ** 3).mean() / sd**3) if sd > 0 else 0.0
