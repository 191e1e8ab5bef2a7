"""The recommender through the real bundled Triton: answers equal the in-process scorer's, lists as long as each
request asks (in one dynamic batch too), only suitable products, and a bad request refused alone."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pytest

from clients import RecommenderClient
from engine.errors import InvalidInputError
from engine.families.recommender import RecommenderScorer, RecommenderTrainResult
from engine.serving.server import TritonServer


@pytest.fixture(scope="module")
def scorer(recommender_trained: RecommenderTrainResult) -> RecommenderScorer:
    return RecommenderScorer.load(recommender_trained.path)


def test_served_lists_equal_in_process(server: TritonServer, scorer: RecommenderScorer) -> None:
    known = list(scorer.customer_index)[:3]
    profile = {"risk_tolerance": [5.0], "horizon_years": [12.0], "income_band": ["high"], "goal": ["growth"]}
    with RecommenderClient(server.grpc_url) as client:
        served = client.recommend(known, k=7)
        cold = client.recommend(["a-new-customer"], k=4, profile=profile)[0]
    for customer, got in zip(known, served, strict=True):
        ids, scores, reasons = scorer.recommend(
            customer, scorer.validate({"customer_id": np.array([[customer.encode()]], dtype=object)})["profile"][0], 7
        )
        assert [r.product_id for r in got] == list(scorer.product_ids[ids])
        np.testing.assert_allclose([r.score for r in got], scores, rtol=0, atol=1e-5)
        assert [r.reason for r in got] == reasons
    assert len(cold) == 4


def test_each_request_of_a_batch_gets_its_own_length(server: TritonServer, scorer: RecommenderScorer) -> None:
    """Concurrent requests asking for different k, batched together by Triton: each list is the in-process one."""
    customers = list(scorer.customer_index)[:24]
    with RecommenderClient(server.grpc_url) as client, ThreadPoolExecutor(8) as pool:
        lists = list(pool.map(lambda i: client.recommend([customers[i]], k=1 + i % 5)[0], range(24)))
    for i, got in enumerate(lists):
        profile = scorer.validate({"customer_id": np.array([[customers[i].encode()]], dtype=object)})["profile"][0]
        ids, _, _ = scorer.recommend(customers[i], profile, 1 + i % 5)
        assert [r.product_id for r in got] == list(scorer.product_ids[ids])
    assert {len(x) for x in lists} >= {1, 5}


def test_only_suitable_products_come_back(server: TritonServer, advisory: dict) -> None:
    products = pl.read_parquet(advisory["products.parquet"])
    risk = dict(zip(products["product_id"], products["risk_level"], strict=True))
    horizon = dict(zip(products["product_id"], products["min_horizon_years"], strict=True))
    rng = np.random.default_rng(5)
    with RecommenderClient(server.grpc_url) as client:
        for _ in range(30):
            tolerance, years = int(rng.integers(1, 8)), float(rng.uniform(0, 20))
            got = client.recommend(
                ["prospect"],
                k=20,
                profile={"risk_tolerance": [tolerance], "horizon_years": [years], "income_band": ["very_high"]},
            )[0]
            assert all(risk[r.product_id] <= tolerance and horizon[r.product_id] <= years for r in got)


def test_bad_request_fails_alone_and_the_server_stays_up(server: TritonServer, scorer: RecommenderScorer) -> None:
    known = next(iter(scorer.customer_index))
    with RecommenderClient(server.grpc_url) as client, ThreadPoolExecutor(4) as pool:
        bad = pool.submit(client.recommend, ["stranger"])
        good = [pool.submit(client.recommend, [known], k=3) for _ in range(3)]
        with pytest.raises(InvalidInputError, match="not known to this version and the request carries no profile"):
            bad.result()
        assert all(len(g.result()[0]) == 3 for g in good)
        with pytest.raises(InvalidInputError, match="between 1 and 100"):
            client.recommend([known], k=500)
        assert client.is_ready()
        assert not math.isnan(client.recommend([known], k=1)[0][0].score)
