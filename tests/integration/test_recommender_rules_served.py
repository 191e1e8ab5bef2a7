"""Suitability through the real Triton, over random catalogues and random rules: several recommender versions,
each trained on its own generated catalogue (the rule columns redrawn at random, some values missing) with its
own random rules file, all loaded at once (``version_policy: all``) and asked for by version number. For many
random customers (known ones, and new ones with random profiles) every product any version returns passes every
rule of that version, checked here from the version's own files; no list repeats a product, holds one the
customer already has, or breaks its asset-class cap; and each answer equals the in-process scorer's."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients.recommender import recommendation_lists, request_arrays
from engine.demo.advisory import INCOME_BANDS, advisory_tables
from engine.families.recommender import RecommenderScorer, train_recommender
from engine.families.recommender.scorer import PROFILE_FIELDS
from engine.serving.repository import ModelRepository
from engine.serving.server import ServerPorts, TritonServer

VERSIONS = 5
REQUESTS_PER_VERSION = 40
OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
OUTPUTS = ("product_ids", "scores", "reasons")
FIELDS = (("risk_level", "risk_tolerance"), ("min_horizon_years", "horizon_years"), ("min_investment", "income_band"))


def _random_version(rng: np.random.Generator, folder: Path, seed: int) -> tuple[dict[str, Path], dict[str, Any]]:
    """Generated advisory files with the catalogue's rule columns redrawn, and a random rules file."""
    tables = advisory_tables(120, 150, seed=seed)
    n = tables.products.height
    risk = rng.integers(1, 8, n).astype(float)
    risk[rng.random(n) < 0.05] = np.nan  # a product without a risk level is never suitable
    products = tables.products.with_columns(
        pl.Series("risk_level", risk),
        pl.Series("min_horizon_years", np.round(rng.uniform(0, 15, n), 1)),
        pl.Series("min_investment", rng.choice([0.0, 100.0, 1e3, 5e3, 2.5e4, 1e5], n)),
    )
    paths = tables.write(folder)
    products.write_parquet(paths["products.parquet"])
    chosen = rng.permutation(len(FIELDS))[: rng.integers(1, len(FIELDS) + 1)]
    rules: list[dict[str, Any]] = []
    for i in chosen:
        product, customer = FIELDS[i]
        rule: dict[str, Any] = {
            "name": f"r{i}",
            "product": product,
            "op": str(rng.choice(list(OPS))),
            "customer": customer,
        }
        if customer == "income_band":  # a band the mapping leaves out fails closed
            bands = rng.permutation(INCOME_BANDS)[: rng.integers(1, len(INCOME_BANDS) + 1)]
            rule["values"] = {str(b): float(rng.choice([500.0, 5e3, 3e4, 1e15])) for b in bands}
        rules.append(rule)
    spec = {"rules": rules}
    if rng.random() < 0.8:
        spec["diversification"] = {"column": "asset_class", "max_share": float(rng.uniform(0.1, 1.0))}
    paths["rules.json"] = folder / "rules.json"
    paths["rules.json"].write_text(json.dumps(spec), encoding="utf-8")
    return paths, spec


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    """VERSIONS random versions of one recommender in a repository of their own: version -> its rules and files."""
    rng = np.random.default_rng(2026)
    root = tmp_path_factory.mktemp("random-rules")
    repo = ModelRepository(root / "repo")
    out = {}
    for v in range(VERSIONS):
        paths, rules = _random_version(rng, root / f"data{v}", seed=100 + v)
        r = train_recommender(
            paths["holdings.parquet"],
            customers=paths["customers.parquet"],
            products=paths["products.parquet"],
            rules=paths["rules.json"],
            weight="amount",
            repo=repo,
            seed=v,
            als={"iterations": 3},
        )
        out[r.version] = {"rules": rules, "path": r.path}
    config = repo.model_dir("recommender") / "config.pbtxt"
    config.write_text(config.read_text(encoding="utf-8") + "version_policy: { all { } }\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def served(versions: dict[int, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = next(iter(versions.values()))["path"].parent.parent
    log = tmp_path_factory.mktemp("triton-rules") / "triton.log"
    with TritonServer(repo, ports=ServerPorts.free(), models=["recommender"], log_path=log, ready_timeout=120) as srv:
        yield srv.grpc_url


def _value(rule: dict[str, Any], profile: dict[str, Any]) -> float:
    raw = profile.get(rule["customer"])
    if "values" in rule:
        return float(rule["values"].get(raw, math.nan)) if raw not in (None, "") else math.nan
    return math.nan if raw is None else float(raw)


def _random_request(rng: np.random.Generator, customers: list[str]) -> tuple[list[str], int, dict[str, list[Any]]]:
    rows = int(rng.integers(1, 4))
    ids = [str(rng.choice(customers)) if rng.random() < 0.6 else f"new-{rng.integers(1e6)}" for _ in range(rows)]
    profile: dict[str, list[Any]] = {
        "risk_tolerance": [float(rng.integers(1, 8)) if rng.random() < 0.8 else math.nan for _ in ids],
        "horizon_years": [float(rng.uniform(0, 25)) if rng.random() < 0.8 else math.nan for _ in ids],
        "income_band": [str(rng.choice(INCOME_BANDS)) if rng.random() < 0.8 else "" for _ in ids],
        "age": [float(rng.integers(20, 80)) for _ in ids],  # a new customer must bring some profile
    }
    for field in list(profile):
        if field != "age" and rng.random() < 0.3:
            del profile[field]  # the stored profile stands (or, for someone new, the field is missing)
    return ids, int(rng.integers(1, 40)), profile


def test_no_version_returns_an_unsuitable_product(served: str, versions: dict[int, dict[str, Any]]) -> None:
    rng = np.random.default_rng(7)
    types = dict(PROFILE_FIELDS) | {"customer_id": "BYTES", "k": "INT32"}
    client = grpcclient.InferenceServerClient(url=served)
    checked = returned = 0
    try:
        assert sorted(client.get_model_metadata("recommender").versions, key=int) == [str(v) for v in versions]
        for version, spec in versions.items():
            scorer = RecommenderScorer.load(spec["path"])
            catalogue = pl.read_parquet(spec["path"] / "products.parquet")
            row_of = {p: i for i, p in enumerate(catalogue["product_id"].to_list())}
            stored = pl.read_parquet(spec["path"] / "customers.parquet")
            profiles = {r.pop("customer_id"): r for r in stored.to_dicts()}
            held = {c: set(scorer.held[i].indices.tolist()) for c, i in scorer.customer_index.items()}
            for _ in range(REQUESTS_PER_VERSION):
                ids, k, given = _random_request(rng, list(profiles))
                arrays = request_arrays(types, ids, k=k, profile=given)
                inputs = []
                for name, arr in arrays.items():
                    tensor = grpcclient.InferInput(name, list(arr.shape), types[name])
                    tensor.set_data_from_numpy(arr)
                    inputs.append(tensor)
                try:
                    result = client.infer("recommender", inputs, model_version=str(version))
                except InferenceServerException as exc:  # someone new whose given fields are all missing
                    assert "StatusCode.INVALID_ARGUMENT" in str(exc.status()), exc
                    continue
                lists = recommendation_lists({n: result.as_numpy(n) for n in OUTPUTS}, len(ids))
                local = scorer.score_rows(scorer.validate(arrays))
                for row, (customer, got) in enumerate(zip(ids, lists, strict=True)):
                    profile = dict(profiles.get(customer, {}))
                    for name, values in given.items():
                        value = values[row]
                        if not (value == "" or (isinstance(value, float) and math.isnan(value))):
                            profile[name] = value
                    products = [r.product_id for r in got]
                    assert len(products) == len(set(products)) <= k
                    assert [p for p in local["product_ids"][row] if p] == products
                    for p in products:
                        j = row_of[p]
                        assert j not in held.get(customer, set())
                        for rule in spec["rules"]["rules"]:
                            have = catalogue[rule["product"]][j]
                            assert have is not None and OPS[rule["op"]](float(have), _value(rule, profile)), (p, rule)
                    if "diversification" in spec["rules"]:
                        cap = max(1, math.floor(spec["rules"]["diversification"]["max_share"] * k))
                        classes = [catalogue["asset_class"][row_of[p]] for p in products]
                        assert all(classes.count(c) <= cap for c in set(classes))
                    checked += 1
                    returned += len(products)
    finally:
        client.close()
    assert checked >= VERSIONS * REQUESTS_PER_VERSION  # most requests answered, each row checked
    assert returned > 100  # the rules left something to recommend: the checks above ran on real lists
