"""Recommending products: retrieval from the faiss index, the suitability rules, then ranking with diversification.

For each request row: the customer's profile (the request's fields over the stored ones) gives the suitable
products (:mod:`engine.families.recommender.rules`); the query vector (collaborative factors when the customer
has history, the content part from the profile) retrieves candidates; every candidate is checked against the
rules again on its own catalogue row, products the customer already holds are dropped, and the list is ranked
by score with no asset class above its share. Fewer than ``k`` suitable products give a shorter list, never an
unsuitable one. Outputs are ``[rows, n]``, ``n`` the longest list of the batch, padded with ``""`` and NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.device import Device
from engine.errors import InvalidInputError, ModelNotReadyError
from engine.families.contract import load_version
from engine.families.recommender.content import ContentModel
from engine.families.recommender.index import ProductIndex
from engine.families.recommender.rules import RULES_FILE, Rules
from engine.serving.config import TensorSpec

__all__ = [
    "CUSTOMERS_FILE",
    "DEFAULT_K",
    "INDEX_FILE",
    "MAX_K",
    "OUTPUTS",
    "PARAMS_FILE",
    "PRODUCTS_FILE",
    "PROFILE_FIELDS",
    "REASONS",
    "SEEN_FILE",
    "USERS_FILE",
    "RecommenderScorer",
]

INDEX_FILE = "products.faiss"
USERS_FILE = "users.npy"
SEEN_FILE = "held.npz"
CUSTOMERS_FILE = "customers.parquet"
PRODUCTS_FILE = "products.parquet"
PARAMS_FILE = "recommender.json"
DEFAULT_K = 10
MAX_K = 100
#: The profile fields a request may carry for a customer, with their wire type.
PROFILE_FIELDS = {
    "risk_tolerance": "FP32",
    "horizon_years": "FP32",
    "age": "FP32",
    "income_band": "BYTES",
    "esg_preference": "BYTES",
    "goal": "BYTES",
}
OUTPUTS = (
    TensorSpec("product_ids", "BYTES", (-1,)),
    TensorSpec("scores", "FP32", (-1,)),
    TensorSpec("reasons", "BYTES", (-1,)),
)
#: Why a product is on the list: the part of its score that weighs most.
REASONS = {
    "collaborative": "held by investors like you",
    "asset_class": "suits the goal in your profile",
    "region": "a region investors with your profile hold",
    "risk_level": "fits your risk profile",
    "esg_score": "matches your ESG preference",
    "fee_pct": "fees investors with your profile accept",
    "popularity": "popular with investors",
}


def _text(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.ravel()]


class RecommenderScorer:
    """A trained recommender version, ready to answer."""

    OUTPUTS: ClassVar[Sequence[TensorSpec]] = OUTPUTS

    def __init__(self, version_dir: Path, *, device: Device = "cpu") -> None:
        import faiss

        d = version_dir
        self.version = d.name
        self.device = device
        self.meta = json.loads((d / PARAMS_FILE).read_text(encoding="utf-8"))
        self.users = np.load(d / USERS_FILE)
        self.held = sp.load_npz(d / SEEN_FILE).tocsr()
        customers = pl.read_parquet(d / CUSTOMERS_FILE)
        self.customer_index = {c: i for i, c in enumerate(customers["customer_id"].to_list())}
        if not len(self.users) == self.held.shape[0] == customers.height:
            # Rows pair customers with their factors and holdings by position: never load a mismatch.
            msg = (
                f"{d}: {CUSTOMERS_FILE}, {USERS_FILE} and {SEEN_FILE} hold {customers.height}, {len(self.users)} "
                f"and {self.held.shape[0]} customers; they must agree (retrain, or finish the erasure)"
            )
            raise ModelNotReadyError(msg)
        self.profiles = customers.drop("customer_id").to_dicts() if customers.width > 1 else None
        catalogue = pl.read_parquet(d / PRODUCTS_FILE)
        self.product_ids = np.asarray(catalogue["product_id"].to_list(), dtype=object)
        self.n = len(self.product_ids)
        self.rules = Rules.read(d / RULES_FILE)
        self.rules.check_catalogue(catalogue.columns, source=str(d / RULES_FILE))
        numeric = {c for c, t in catalogue.schema.items() if t.is_numeric()}
        self.catalogue = {c: catalogue[c].to_numpy().astype(np.float64) for c in numeric}
        div = self.rules.diversification
        self.groups = catalogue[div.column].cast(pl.Utf8).fill_null("").to_numpy() if div else None
        codes = np.unique(self.groups, return_inverse=True)[1] if self.groups is not None else None
        self.products = ProductIndex(
            faiss.read_index(str(d / INDEX_FILE)),
            groups=codes,
            order_by=self.rules.order_keys(self.catalogue),
            device=device,
        )
        # The catalogue's numeric columns again in slab order: the rules' mask comes out in the order the scan
        # reads it (no gather of a mask a query); the re-check of the candidates reads the catalogue's own rows.
        self.laid_catalogue = {r.product: self.products.laid_out(self.catalogue[r.product]) for r in self.rules.rules}
        self.content = ContentModel.from_dict(self.meta["content"]) if self.meta.get("content") else None
        self.scale = float(self.meta.get("content_scale", 0.0))
        self.spec: dict[str, dict[str, Any]] = self.meta.get("profile", {})
        self.cf_dims = int(self.meta["collaborative_dims"])
        # Each content dimension's product attribute, as a [dimensions, attributes] one-hot: a product's score
        # parts summed by attribute in one product, for its reason.
        names = (self.content.token_attribute() + ["popularity"]) if self.content else []
        self._attributes = list(dict.fromkeys(names))
        self._by_attribute = np.zeros((len(names), len(self._attributes)), dtype=np.float32)
        self._by_attribute[np.arange(len(names)), [self._attributes.index(a) for a in names]] = 1.0

    @classmethod
    def load(cls, version_dir: str | Path, *, device: Device = "cpu") -> RecommenderScorer:
        def read(d: Path) -> RecommenderScorer:
            return cls(d, device=device)

        return load_version(version_dir, family="recommender", model_file=INDEX_FILE, read=read)

    @staticmethod
    def declared_inputs(profile: Mapping[str, Mapping[str, Any]]) -> list[TensorSpec]:
        fields = [TensorSpec(name, spec["type"], (1,), optional=True) for name, spec in profile.items()]
        return [TensorSpec("customer_id", "BYTES", (1,)), TensorSpec("k", "INT32", (1,), optional=True), *fields]

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self.declared_inputs(self.spec)

    # -- requests ---------------------------------------------------------------------------------------------

    def validate(self, columns: Mapping[str, object]) -> dict[str, Any]:
        """The request's rows: ``customer_id`` and ``k`` per row, and each row's profile (a dict)."""
        if "customer_id" not in columns:
            raise InvalidInputError("input 'customer_id' is missing from the request")
        ids = _text(np.asarray(columns["customer_id"], dtype=object))
        n = len(ids)
        if n == 0:
            raise InvalidInputError("input 'customer_id' has no rows")
        k = np.full(n, DEFAULT_K, dtype=np.int64)
        if "k" in columns:
            raw = np.asarray(columns["k"])
            if raw.size != n or raw.dtype.kind not in "iu":
                msg = f"input 'k' must be one whole number per row ({n} rows), got {raw.size} of {raw.dtype}"
                raise InvalidInputError(msg)
            k = raw.ravel().astype(np.int64)
            if (k < 1).any() or (k > MAX_K).any():
                msg = f"input 'k' must be between 1 and {MAX_K}, got {int(k[(k < 1) | (k > MAX_K)][0])}"
                raise InvalidInputError(msg)
        given: list[dict[str, Any]] = [{} for _ in range(n)]
        for name in set(columns) - {"customer_id", "k"}:
            if name not in self.spec:
                msg = f"input {name!r} is not a profile field of this version ({', '.join(self.spec) or 'none'})"
                raise InvalidInputError(msg)
            self._read_field(name, np.asarray(columns[name]), given)
        profiles = []
        for i, (cid, row) in enumerate(zip(ids, given, strict=True)):
            known = self.customer_index.get(cid)
            if known is None and not row:
                where = f"row {i}: " if n > 1 else ""  # a one-row request (a bulk job's bisection) is its row
                msg = (
                    f"{where}the customer is not known to this version and the request carries no profile "
                    f"({', '.join(self.spec) or 'this version takes none'})"
                )
                raise InvalidInputError(msg)
            stored = self.profiles[known] if known is not None and self.profiles is not None else {}
            profiles.append({**stored, **row})
        return {"customer_id": ids, "k": k, "profile": profiles}

    def _read_field(self, name: str, raw: np.ndarray, given: list[dict[str, Any]]) -> None:
        n = len(given)
        if raw.size != n:
            msg = f"input {name!r} has {raw.size} values for {n} rows"
            raise InvalidInputError(msg)
        spec = self.spec[name]
        if spec["type"] == "FP32":
            if raw.dtype.kind != "f":
                msg = f"input {name!r} must be FP32, got {raw.dtype}"
                raise InvalidInputError(msg)
            for row, v in zip(given, raw.ravel().tolist(), strict=True):
                if not math.isnan(v):
                    row[name] = float(v)
            return
        allowed = set(spec.get("values", []))
        for row, v in zip(given, _text(raw.astype(object)), strict=True):
            if v == "":
                continue
            if v not in allowed:
                msg = f"input {name!r}: unknown value; expected one of {', '.join(sorted(allowed))}"
                raise InvalidInputError(msg)
            row[name] = v

    # -- scoring ----------------------------------------------------------------------------------------------

    def query(self, customer: str, profile: Mapping[str, Any]) -> tuple[np.ndarray, int | None]:
        known = self.customer_index.get(customer)
        cf = self.users[known] if known is not None else np.zeros(self.cf_dims, np.float32)
        if self.content is None:
            return cf, known
        content = np.append(self.content.query(profile), float(self.meta.get("popularity", 1.0)))
        return np.concatenate([cf, content * self.scale]).astype(np.float32), known

    def recommend(self, customer: str, profile: Mapping[str, Any], k: int) -> tuple[list[int], list[float], list[str]]:
        """Product indices, scores and reasons for one customer, best first."""
        q, known = self.query(customer, profile)
        allowed = self.rules.suitable(self.laid_catalogue, profile) if self.rules.rules else np.ones(self.n, dtype=bool)
        if known is not None:
            held = self.held.indices[self.held.indptr[known] : self.held.indptr[known + 1]]
            allowed[self.products.position[held]] = False
        cap = self.rules.diversification.cap(k) if self.rules.diversification else k
        # Greedy diversification over the whole ranking picks from each group's best `cap` alone.
        scores, ids = self.products.best(q, allowed, cap)
        if self.rules.rules:  # every candidate checked again on its own catalogue row, not through the mask alone
            passed = self.rules.suitable({c: v[ids] for c, v in self.catalogue.items()}, profile)
            scores, ids = scores[passed], ids[passed]
        chosen = self._diversified(ids, k, cap)
        by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        return chosen, [float(by_id[j]) for j in chosen], self._reasons(q, chosen, known is not None)

    def _diversified(self, ids: np.ndarray, k: int, cap: int) -> list[int]:
        """The best ``k`` of ``ids`` (in score order) with no more than ``cap`` of one diversification group."""
        if self.groups is None:
            return [int(j) for j in ids[:k]]
        chosen: list[int] = []
        counts: dict[str, int] = {}
        for j in ids:
            group = self.groups[j]
            if counts.get(group, 0) < cap:
                counts[group] = counts.get(group, 0) + 1
                chosen.append(int(j))
                if len(chosen) == k:
                    break
        return chosen

    def _reasons(self, q: np.ndarray, chosen: list[int], has_history: bool) -> list[str]:
        """Each product's reason: the part of its score that weighs most (its collaborative part, or the product
        attribute whose content tokens add most)."""
        if not chosen:
            return []
        if self.content is None:
            return [REASONS["collaborative"]] * len(chosen)
        items = self.products.rows(chosen)
        cf = items[:, : self.cf_dims] @ q[: self.cf_dims] if has_history else np.full(len(chosen), -np.inf)
        by_attribute = (items[:, self.cf_dims :] * q[self.cf_dims :]) @ self._by_attribute  # [chosen, attributes]
        best = by_attribute.argmax(axis=1)
        top = by_attribute[np.arange(len(chosen)), best]
        return [
            REASONS["collaborative"] if c >= t else REASONS[self._attributes[b]]
            for c, t, b in zip(cf.tolist(), top.tolist(), best.tolist(), strict=True)
        ]

    def score_rows(self, rows: Mapping[str, Any], *, outputs: Collection[str] | None = None) -> dict[str, np.ndarray]:
        results = [
            self.recommend(c, p, int(k))
            for c, p, k in zip(rows["customer_id"], rows["profile"], rows["k"], strict=True)
        ]
        width = max((len(r[0]) for r in results), default=0)
        n = len(results)
        ids = np.full((n, width), "", dtype=object)
        scores = np.full((n, width), np.nan, dtype=np.float32)
        reasons = np.full((n, width), "", dtype=object)
        for i, (chosen, s, why) in enumerate(results):
            m = len(chosen)
            ids[i, :m] = self.product_ids[chosen]
            scores[i, :m] = s
            reasons[i, :m] = why
        return {"product_ids": ids, "scores": scores, "reasons": reasons}
