"""Training the recommender: implicit-feedback ALS (the ``implicit`` library), a content model when customer and
product attributes are given, blended into one vector space and written as a faiss index with the rules.

The version is learned twice: first on 75% of each customer's interactions, to measure the held-out metrics
of :mod:`engine.families.recommender.evaluate` (``metrics.json``), then on everything, which is what is served.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.device import Device, resolve_device
from engine.errors import DataFileError, SchemaError
from engine.families.contract import TrainResult, model_config, publish_version
from engine.families.recommender.content import ContentModel
from engine.families.recommender.evaluate import RankingMetrics, holdout_split, ranking_metrics
from engine.families.recommender.index import build_index
from engine.families.recommender.rules import DEFAULT_RULES, RULES_FILE, Rules
from engine.families.recommender.scorer import (
    CUSTOMERS_FILE,
    INDEX_FILE,
    OUTPUTS,
    PARAMS_FILE,
    PRODUCTS_FILE,
    PROFILE_FIELDS,
    SEEN_FILE,
    USERS_FILE,
    RecommenderScorer,
)
from engine.security.erasure import erased_subjects, without_erased
from engine.security.trail import Trail
from engine.serving.repository import ModelRepository
from engine.tables.io import read_table, require_columns

__all__ = ["ALS_DEFAULTS", "CONTENT_WEIGHTS", "RecommenderTrainResult", "train_recommender"]

MODEL_NAME = "recommender"
# Chosen on MovieLens-100k, seed 42, over a grid of 36 (factors 16-48, regularization 0.01-1, alpha 1-4); seeds
# 0 and 1 confirm (README). Few factors and strong regularization suit a few hundred interactions per user.
ALS_DEFAULTS = {"factors": 16, "regularization": 1.0, "alpha": 2.0, "iterations": 15}
#: The content model's weights tried against the collaborative part's (at 1 the two spread alike); training
#: picks the one that ranks best on a validation quarter of the training interactions.
CONTENT_WEIGHTS = (0.1, 0.3, 1.0, 3.0, 10.0)
#: The popularity term's weights tried in the content model (at 1 it counts as one pair of attributes).
POPULARITY_WEIGHTS = (0.3, 1.0, 3.0, 10.0)
#: Ranking every product for every customer costs customers × products: above these many customers with
#: held-out items, the weights are chosen on (and the figures computed over) a seeded sample of them.
#: MovieLens-100k (943 users) is below both, so its figures are over every user.
VALIDATION_USERS = 1_000
EVALUATION_USERS = 5_000


@dataclass(frozen=True)
class RecommenderTrainResult(TrainResult):
    metrics: RankingMetrics
    customers: int
    products: int
    interactions: int
    left_out: int
    #: The length of each product's vector in the index (collaborative factors, then content tokens).
    dims: int
    #: NDCG@10 of each part alone on the same held-out split (None without a content model).
    ndcg_collaborative: float
    ndcg_content: float | None
    #: Customers left out because ``finscore forget`` erased them (the audit log's erasure lines).
    erased_customers: int = 0


def _als(matrix: sp.csr_matrix, *, seed: int, device: Device, threads: int, params: Mapping[str, float]) -> Any:
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit runs its own threads; BLAS's beside them only contend (and implicit warns of it).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=int(params["factors"]),
            regularization=float(params["regularization"]),
            alpha=float(params["alpha"]),
            iterations=int(params["iterations"]),
            random_state=seed,
            calculate_training_loss=False,
            num_threads=threads,
            use_gpu=device == "gpu",
        )
        model.fit(matrix, show_progress=False)
    if hasattr(model, "to_cpu") and device == "gpu":
        model = model.to_cpu()
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


@dataclass(frozen=True)
class _Parts:
    users: np.ndarray  # [U, f] collaborative
    items: np.ndarray  # [I, f]
    queries: np.ndarray | None  # [U, d] content (unscaled)
    products: np.ndarray | None  # [I, d] content tokens and popularity
    spread: float  # collaborative spread over content spread: the scale at which the two weigh alike

    def scale(self, weight: float) -> float:
        return weight * self.spread

    def user_vectors(self, weight: float, popularity: float = 1.0) -> np.ndarray:
        if self.queries is None:
            return self.users
        q = self.queries.copy()
        q[:, -1] = popularity
        return np.hstack([self.users, q * self.scale(weight)])

    def item_vectors(self) -> np.ndarray:
        return self.items if self.products is None else np.hstack([self.items, self.products])

    def metrics(
        self,
        weight: float,
        popularity: float,
        train: sp.csr_matrix,
        test: sp.csr_matrix,
        *,
        max_users: int = EVALUATION_USERS,
    ) -> RankingMetrics:
        uv, iv = self.user_vectors(weight, popularity), self.item_vectors()
        return ranking_metrics(lambda u: uv[u] @ iv.T, train, test, max_users=max_users)


def _fit(
    matrix: sp.csr_matrix,
    customers: pl.DataFrame | None,
    catalogue: pl.DataFrame,
    *,
    seed: int,
    device: Device,
    threads: int,
    params: Mapping[str, float],
) -> tuple[_Parts, ContentModel | None]:
    users, items = _als(matrix, seed=seed, device=device, threads=threads, params=params)
    if customers is None or catalogue.width < 2:
        return _Parts(users, items, None, None, 0.0), None
    content = ContentModel.fit(customers, catalogue, matrix)
    popularity = np.log1p(np.asarray((matrix > 0).sum(axis=0), np.float32).ravel())
    products = np.hstack([content.product_vectors(catalogue), (popularity / max(popularity.max(), 1.0))[:, None]])
    queries = np.array([np.append(content.query(p), 1.0) for p in customers.iter_rows(named=True)], np.float32)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(users), min(len(users), 500), replace=False)
    spread_cf = float((users[sample] @ items.T).std())
    spread_content = float((queries[sample] @ products.T).std())
    spread = spread_cf / spread_content if spread_content > 0 and spread_cf > 0 else 1.0
    return _Parts(users, items, queries, products, spread), content


def _content_weight(
    train: sp.csr_matrix, customers: pl.DataFrame | None, catalogue: pl.DataFrame, *, seed: int, **fit: Any
) -> tuple[float, float]:
    """The content model's weight and its popularity term's that rank best on a validation quarter of the
    training interactions."""
    if customers is None or catalogue.width < 2:
        return 0.0, 0.0
    coo = train.tocoo()
    held = holdout_split(coo.row, seed=seed + 1)
    inner = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])), shape=train.shape)
    valid = sp.csr_matrix((coo.data[held], (coo.row[held], coo.col[held])), shape=train.shape)
    parts, _ = _fit(inner, customers, catalogue, seed=seed, **fit)
    grid = [(w, p) for w in CONTENT_WEIGHTS for p in POPULARITY_WEIGHTS]
    return max(grid, key=lambda wp: parts.metrics(wp[0], wp[1], inner, valid, max_users=VALIDATION_USERS).ndcg_at_10)


def _interactions(path: Path, user: str, item: str, weight: str | None) -> tuple[pl.DataFrame, dict[str, int]]:
    df = read_table(path)
    needed = [user, item] + ([weight] if weight else [])
    require_columns(df.columns, needed, source=str(path))
    df = df.select(
        pl.col(user).cast(pl.Utf8).alias("user"),
        pl.col(item).cast(pl.Utf8).alias("item"),
        (pl.col(weight).cast(pl.Float64, strict=False) if weight else pl.lit(1.0)).alias("weight"),
    )
    usable = pl.col("user").is_not_null() & pl.col("item").is_not_null() & (pl.col("weight") > 0).fill_null(False)
    kept = df.filter(usable)
    left = {"without a user, an item or a positive weight": df.height - kept.height}
    return kept, left


def train_recommender(
    interactions: str | os.PathLike[str],
    *,
    user: str = "customer_id",
    item: str = "product_id",
    weight: str | None = None,
    customers: str | os.PathLike[str] | None = None,
    products: str | os.PathLike[str] | None = None,
    rules: str | os.PathLike[str] | None = None,
    repo: ModelRepository | None = None,
    seed: int = 42,
    device: Device | str = "auto",
    threads: int = 1,
    instance_count: int = 1,
    als: Mapping[str, float] | None = None,
) -> RecommenderTrainResult:
    """Train and publish a new ``recommender`` version; ``customers`` (keyed by ``user``) and ``products``
    (keyed by ``item``) add the content model, the suitability rules' columns and cold-start results."""
    started = time.perf_counter()
    repo = repo or ModelRepository()
    dev = resolve_device(str(device))
    params = {**ALS_DEFAULTS, **(als or {})}
    df, left_out = _interactions(Path(interactions), user, item, weight)
    # A customer erased with `finscore forget` stays erased: not trained on, not kept in the version, even when
    # the files still hold them (the audit log's erasure lines are the registry).
    trail = Trail.from_env()
    registry = erased_subjects(trail)  # read once for both tables
    df, left_out["of customers erased with finscore forget"], erased = without_erased(
        df, "user", trail, erased=registry
    )

    if products:
        catalogue = _catalogue(Path(products), item)
    else:
        catalogue = pl.DataFrame({"product_id": df["item"].unique().sort()})
    known_items = set(catalogue["product_id"].to_list())
    outside = df.filter(~pl.col("item").is_in(list(known_items)))
    if outside.height:
        left_out["with a product the catalogue lacks"] = outside.height
        df = df.filter(pl.col("item").is_in(list(known_items)))
    profiles = _customers(Path(customers), user) if customers else None
    if profiles is not None:
        profiles, _, erased_profiles = without_erased(profiles, "customer_id", trail, erased=registry)
        erased |= erased_profiles
    profiled = set(profiles["customer_id"].to_list()) if profiles is not None else set()
    ids = sorted(set(df["user"].to_list()) | profiled)
    if df.height < 10 or len(ids) < 2:
        msg = f"{interactions}: too few usable interactions to train ({df.height}); need 10+ over 2+ customers"
        raise SchemaError(msg)
    if profiles is not None:
        profiles = pl.DataFrame({"customer_id": ids}).join(profiles, on="customer_id", how="left")

    u_index = {u: i for i, u in enumerate(ids)}
    i_index = {p: i for i, p in enumerate(catalogue["product_id"].to_list())}
    rows = np.array([u_index[u] for u in df["user"].to_list()], dtype=np.int64)
    cols = np.array([i_index[p] for p in df["item"].to_list()], dtype=np.int64)
    w = df["weight"].to_numpy().astype(np.float64)
    values = (1.0 + np.log1p(w / np.median(w))).astype(np.float32)
    shape = (len(ids), catalogue.height)

    def matrix(mask: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((values[mask], (rows[mask], cols[mask])), shape=shape)
        m.sum_duplicates()
        return m

    held = holdout_split(rows, seed=seed)
    train_m, test_m = matrix(~held), matrix(held)
    fit_args: dict[str, Any] = {"device": dev, "threads": threads, "params": params}
    weight_c, popularity = _content_weight(train_m, profiles, catalogue, seed=seed, **fit_args)
    parts, _ = _fit(train_m, profiles, catalogue, seed=seed, **fit_args)
    metrics = parts.metrics(weight_c, popularity, train_m, test_m)
    sample = {"max_users": EVALUATION_USERS}
    ndcg_cf = ranking_metrics(lambda u: parts.users[u] @ parts.items.T, train_m, test_m, **sample).ndcg_at_10
    ndcg_content = None
    if parts.queries is not None and parts.products is not None:
        q, p = parts.user_vectors(1.0, popularity)[:, parts.users.shape[1] :], parts.products
        ndcg_content = ranking_metrics(lambda u: q[u] @ p.T, train_m, test_m, **sample).ndcg_at_10

    full = matrix(np.ones(len(rows), dtype=bool))
    final, content = _fit(full, profiles, catalogue, seed=seed, **fit_args)
    rule_set = Rules.read(Path(rules)) if rules else Rules.from_dict(DEFAULT_RULES).for_catalogue(catalogue.columns)
    rule_set.check_catalogue(catalogue.columns, source=str(rules or "the default rules"))
    customer_fields = [f for f in rule_set.customer_fields if profiles is None or f not in profiles.columns]
    if customer_fields:
        msg = f"the rules read customer field {customer_fields[0]!r}, which the customers file lacks"
        raise SchemaError(msg)

    writer = repo.new_version(MODEL_NAME)
    index = build_index(final.item_vectors())
    from faiss import write_index

    write_index(index, str(writer.path / INDEX_FILE))
    np.save(writer.path / USERS_FILE, final.users)
    sp.save_npz(writer.path / SEEN_FILE, (full > 0).astype(np.int8))
    (profiles if profiles is not None else pl.DataFrame({"customer_id": ids})).write_parquet(
        writer.path / CUSTOMERS_FILE
    )
    catalogue.write_parquet(writer.path / PRODUCTS_FILE)
    rule_set.write(writer.path / RULES_FILE)
    profile_spec = _profile_spec(profiles, rule_set)
    meta = {
        "als": params,
        "seed": seed,
        "content_weight": weight_c,
        "content_scale": final.scale(weight_c),
        "popularity": popularity,
        "content": content.as_dict() if content is not None else None,
        "collaborative_dims": int(final.users.shape[1]),
        "profile": profile_spec,
        "interactions": {"train": int(train_m.nnz), "held_out": int(test_m.nnz), "all": int(full.nnz)},
        "left_out": {reason: n for reason, n in left_out.items() if n},
    }
    (writer.path / PARAMS_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    scorer_inputs = RecommenderScorer.declared_inputs(profile_spec)
    config = model_config(MODEL_NAME, scorer_inputs, OUTPUTS, device=dev, instance_count=instance_count)
    extra = {"ndcg_at_10_collaborative": ndcg_cf} | ({"ndcg_at_10_content": ndcg_content} if ndcg_content else {})
    path = publish_version(writer, config, metrics.as_dict() | extra)
    return RecommenderTrainResult(
        writer.version,
        path,
        metrics,
        time.perf_counter() - started,
        customers=len(ids),
        products=catalogue.height,
        interactions=int(full.nnz),
        left_out=sum(left_out.values()),
        dims=int(index.d),
        ndcg_collaborative=ndcg_cf,
        ndcg_content=ndcg_content,
        erased_customers=len(erased),
    )


def _keyed(path: Path, key: str, as_: str, what: str) -> pl.DataFrame:
    """A table whose ``key`` column (renamed ``as_``, as text) names each of its rows once."""
    df = read_table(path)
    require_columns(df.columns, [key], source=str(path))
    df = (df.rename({key: as_}) if key != as_ else df).with_columns(pl.col(as_).cast(pl.Utf8))
    if df[as_].is_duplicated().any() or df[as_].null_count():
        msg = f"{path}: column {key!r} must name each {what} once"
        raise DataFileError(msg)
    return df


def _catalogue(path: Path, item: str) -> pl.DataFrame:
    df = _keyed(path, item, "product_id", "product")
    text = [c for c, t in df.schema.items() if t == pl.Utf8 and c != "product_id"]
    numbers = [c for c, t in df.schema.items() if t.is_numeric()]
    return df.select(["product_id", *text, *[pl.col(c).cast(pl.Float64) for c in numbers]])


def _customers(path: Path, user: str) -> pl.DataFrame:
    df = _keyed(path, user, "customer_id", "customer")
    keep = [name for name in PROFILE_FIELDS if name in df.columns]
    kinds = {name: PROFILE_FIELDS[name] for name in keep}
    return df.select(
        "customer_id",
        *[pl.col(n).cast(pl.Float64, strict=False) if kinds[n] == "FP32" else pl.col(n).cast(pl.Utf8) for n in keep],
    )


def _profile_spec(profiles: pl.DataFrame | None, rules: Rules) -> dict[str, dict[str, Any]]:
    """Each profile field a request may carry: its wire type, and for text the values it may take."""
    if profiles is None:
        return {}
    spec: dict[str, dict[str, Any]] = {}
    for name in profiles.columns[1:]:
        if PROFILE_FIELDS[name] == "FP32":
            spec[name] = {"type": "FP32"}
        else:
            seen = set(profiles[name].drop_nulls().to_list())
            for rule in rules.rules:
                if rule.customer == name:
                    seen |= set(rule.values)
            spec[name] = {"type": "BYTES", "values": sorted(seen)}
    return spec
