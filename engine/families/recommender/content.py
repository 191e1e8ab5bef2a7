"""The content model: which product attributes customers with given attributes hold more than chance.

Customers and products are each read as tokens (``goal=growth``, ``asset_class=equity``, numbers by band:
``age=45-60``). Over the training holdings, each pair of a customer token and a product token gets its smoothed
pointwise mutual information; a customer's affinity to a product is the sum over the pairs they share. That is a
dot product, ``(C W) · P``, so it joins the collaborative vectors in one faiss index, and a customer with no
history (cold start) is ranked by it alone. Only the attributes present in the given files are used.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

__all__ = ["CUSTOMER_ATTRIBUTES", "PRODUCT_ATTRIBUTES", "Attribute", "ContentModel"]


@dataclass(frozen=True)
class Attribute:
    """A column read as tokens: text as is, numbers by the band between ``bins`` (or by value without bins)."""

    name: str
    bins: tuple[float, ...] = ()
    numeric: bool = False

    def tokens(self, values: Sequence[Any]) -> list[str | None]:
        missing = [v is None or v == "" or (isinstance(v, float) and np.isnan(v)) for v in values]
        if not self.bins and not self.numeric:
            return [None if m else f"{self.name}={v}" for v, m in zip(values, missing, strict=True)]
        x = np.array([np.nan if m else float(v) for v, m in zip(values, missing, strict=True)], dtype=np.float64)
        # A whole column at once: one search for every value (per value, it was most of a wide catalogue's load).
        codes = np.searchsorted(self.bins, x, side="right") if self.bins else np.round(np.nan_to_num(x))
        return [None if m else f"{self.name}={int(c)}" for c, m in zip(codes.tolist(), missing, strict=True)]

    def token(self, value: Any) -> str | None:
        """:meth:`tokens` of one value, without arrays (a request's profile: a fifth of a query's time went to
        arrays of one)."""
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            return None
        if not self.bins and not self.numeric:
            return f"{self.name}={value}"
        x = float(value)
        if not math.isfinite(x):
            x = float(np.nan_to_num(x))
        code = bisect.bisect_right(self.bins, x) if self.bins else round(x)
        return f"{self.name}={int(code)}"


CUSTOMER_ATTRIBUTES = (
    Attribute("risk_tolerance", numeric=True),
    Attribute("goal"),
    Attribute("esg_preference"),
    Attribute("income_band"),
    Attribute("age", bins=(30, 45, 60, 75)),
    Attribute("horizon_years", bins=(3, 7, 15)),
)
PRODUCT_ATTRIBUTES = (
    Attribute("asset_class"),
    Attribute("region"),
    Attribute("risk_level", numeric=True),
    Attribute("esg_score", bins=(40, 70)),
    Attribute("fee_pct", bins=(0.5, 1.0)),
)


def _one_hot(frame: pl.DataFrame, attributes: Sequence[Attribute], vocabulary: Mapping[str, int]) -> sp.csr_matrix:
    rows, cols = [], []
    for attr in attributes:
        for i, token in enumerate(attr.tokens(frame.get_column(attr.name).to_list())):
            j = vocabulary.get(token) if token is not None else None
            if j is not None:
                rows.append(i)
                cols.append(j)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(frame.height, len(vocabulary)))


def _vocabulary(frame: pl.DataFrame, attributes: Sequence[Attribute]) -> dict[str, int]:
    tokens: list[str] = []
    for attr in attributes:
        tokens += sorted({t for t in attr.tokens(frame.get_column(attr.name).to_list()) if t is not None})
    return {t: i for i, t in enumerate(tokens)}


@dataclass
class ContentModel:
    customer_attributes: tuple[Attribute, ...]
    product_attributes: tuple[Attribute, ...]
    customer_vocabulary: dict[str, int]
    product_vocabulary: dict[str, int]
    #: [customer tokens, product tokens]: smoothed PMI of holding.
    affinity: np.ndarray

    @classmethod
    def fit(cls, customers: pl.DataFrame, products: pl.DataFrame, holdings: sp.csr_matrix) -> ContentModel:
        """``holdings`` is [customers, products] in the rows' order of the two frames."""
        cattrs = tuple(a for a in CUSTOMER_ATTRIBUTES if a.name in customers.columns)
        pattrs = tuple(a for a in PRODUCT_ATTRIBUTES if a.name in products.columns)
        cvoc, pvoc = _vocabulary(customers, cattrs), _vocabulary(products, pattrs)
        c, p = _one_hot(customers, cattrs, cvoc), _one_hot(products, pattrs, pvoc)
        observed = np.asarray((c.T @ (holdings > 0).astype(np.float32) @ p).todense(), dtype=np.float64)
        total = max(observed.sum(), 1.0)
        expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
        affinity = np.log((observed + 1.0) / (expected + 1.0))
        return cls(cattrs, pattrs, cvoc, pvoc, affinity.astype(np.float32))

    @property
    def dims(self) -> int:
        return len(self.product_vocabulary)

    def product_vectors(self, products: pl.DataFrame) -> np.ndarray:
        return np.asarray(_one_hot(products, self.product_attributes, self.product_vocabulary).todense(), np.float32)

    def customer_tokens(self, profile: Mapping[str, Any]) -> np.ndarray:
        """Indices of a profile's tokens (fields it lacks, or values training never saw, add none)."""
        found = []
        for attr in self.customer_attributes:
            token = attr.token(profile.get(attr.name))
            if token is not None and token in self.customer_vocabulary:
                found.append(self.customer_vocabulary[token])
        return np.asarray(found, dtype=np.int64)

    def query(self, profile: Mapping[str, Any]) -> np.ndarray:
        """The customer's affinity to each product token: the content part of the query vector."""
        tokens = self.customer_tokens(profile)
        if not len(tokens):
            return np.zeros(self.dims, dtype=np.float32)
        return self.affinity[tokens].sum(axis=0).astype(np.float32)

    def token_attribute(self) -> list[str]:
        """The product attribute of each product token, in vector order."""
        names = [""] * self.dims
        for token, j in self.product_vocabulary.items():
            names[j] = token.split("=", 1)[0]
        return names

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_attributes": [[a.name, list(a.bins), a.numeric] for a in self.customer_attributes],
            "product_attributes": [[a.name, list(a.bins), a.numeric] for a in self.product_attributes],
            "customer_vocabulary": self.customer_vocabulary,
            "product_vocabulary": self.product_vocabulary,
            "affinity": self.affinity.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContentModel:
        def attrs(rows: list[list[Any]]) -> tuple[Attribute, ...]:
            return tuple(Attribute(str(n), tuple(float(b) for b in bins), bool(num)) for n, bins, num in rows)

        return cls(
            attrs(data["customer_attributes"]),
            attrs(data["product_attributes"]),
            {str(k): int(v) for k, v in data["customer_vocabulary"].items()},
            {str(k): int(v) for k, v in data["product_vocabulary"].items()},
            np.asarray(data["affinity"], dtype=np.float32).reshape(
                len(data["customer_vocabulary"]), len(data["product_vocabulary"])
            ),
        )
