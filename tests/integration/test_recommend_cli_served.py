"""``finscore recommend`` through the real Triton of the ``server`` fixture: what it prints equals what ``--local``
prints (tables, JSON, a new customer described by flags), and in bulk it writes the same file and rejects the same
rows."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from clients import RecommenderClient
from engine.cli import main
from engine.families.recommender import RecommenderScorer, RecommenderTrainResult
from engine.serving.repository import ModelRepository
from engine.serving.server import TritonServer

NEW = ["--risk-tolerance", "5", "--horizon-years", "12", "--income-band", "high", "--goal", "growth"]


@pytest.fixture(scope="module")
def scorer(recommender_trained: RecommenderTrainResult) -> RecommenderScorer:
    return RecommenderScorer.load(recommender_trained.path)


@pytest.fixture(scope="module")
def repo(server: TritonServer, recommender_trained: RecommenderTrainResult) -> str:
    """The repository the server serves, whose latest recommender version is the one it loaded."""
    root = recommender_trained.path.parent.parent
    with RecommenderClient(server.grpc_url) as client:
        assert client.served_version() == ModelRepository(root).latest("recommender").name
    return str(root)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "case",
    ["table", "json", "new customer", "known with a profile"],
)
def test_served_prints_what_local_prints(
    capsys: pytest.CaptureFixture[str], server: TritonServer, repo: str, scorer: RecommenderScorer, case: str
) -> None:
    known = list(scorer.customer_index)[:4]
    argv = {
        "table": [*known, "--k", "6"],
        "json": [*known, "--json"],
        "new customer": ["a-prospect", *NEW, "--k", "8"],
        "known with a profile": [known[1], *NEW],
    }[case]
    code, served, err = run(capsys, "recommend", *argv, "--url", server.grpc_url)
    assert code == 0, err
    code, local, err = run(capsys, "recommend", *argv, "--local", "--repo", repo)
    assert code == 0, err
    assert served == local
    if case == "json":
        doc = json.loads(served)
        assert list(doc) == known and sum(len(v) for v in doc.values()) > 0
    else:
        assert "1     P" in served and "reason" in served


def test_an_unknown_customer_is_refused_through_the_server_too(
    capsys: pytest.CaptureFixture[str], server: TritonServer
) -> None:
    code, out, err = run(capsys, "recommend", "nobody-we-know", "--url", server.grpc_url)
    assert (code, out) == (1, "")
    assert err.startswith("Error: model 'recommender' rejected the request: ") and err.count("\n") == 1
    assert "not known to this version and the request carries no profile" in err


def test_bulk_through_the_server_writes_what_local_writes(
    capsys: pytest.CaptureFixture[str], server: TritonServer, repo: str, scorer: RecommenderScorer, tmp_path: Path
) -> None:
    known = list(scorer.customer_index)[:150]
    ids = [*known[:70], "stranger", *known[70:], "prospect-1", "prospect-2"]
    n = len(ids)
    frame = pl.DataFrame(
        {
            "customer_id": ids,
            "risk_tolerance": [None] * (n - 2) + [3.0, 6.0],
            "horizon_years": [None] * (n - 2) + [5.0, 20.0],
            "income_band": [None] * (n - 2) + ["middle", "very_high"],
        }
    )
    data = tmp_path / "customers.parquet"
    frame.write_parquet(data)
    outs = {}
    for where in (["--url", server.grpc_url], ["--local", "--repo", repo]):
        out = tmp_path / f"recs-{where[0][2:]}.parquet"
        code, printed, err = run(
            capsys, "recommend", "--data", str(data), "--out", str(out), "--request-rows", "32", "--no-progress", *where
        )
        assert code == 0, err
        assert f"read {n} rows, scored {n - 1}, rejected 1" in printed
        outs[where[0]] = (pl.read_parquet(out), pl.read_csv(out.with_name(out.stem + ".rejected.csv")))
    (served, served_rejects), (local, local_rejects) = outs["--url"], outs["--local"]
    assert served.height > 3 * n and served.equals(local)
    assert {"prospect-1", "prospect-2"} <= set(served["customer_id"])
    assert served_rejects["row"].to_list() == local_rejects["row"].to_list() == [70]
    assert served_rejects["reason"][0].endswith(local_rejects["reason"][0])
