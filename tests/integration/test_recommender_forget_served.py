"""``finscore forget`` against a real Triton serving the recommender: the version's files lose the customers, the
running server loads the model again from them, and then answers for the erased as for anyone unknown while
everyone else gets the lists they got before. A server of its own on a copy of the repository: the session's
server serves the shared fixture's files, which other tests read."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import Recommendation, RecommenderClient
from engine.cli import main
from engine.errors import InvalidInputError
from engine.families.recommender import RecommenderScorer, RecommenderTrainResult
from engine.security.trail import Trail
from engine.serving.server import ServerPorts, TritonServer

PROFILE = {"risk_tolerance": [4.0], "horizon_years": [10.0]}


@pytest.fixture(scope="module")
def served(
    recommender_trained: RecommenderTrainResult, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("forget-recommender-repo")
    shutil.copytree(recommender_trained.path.parent, root / "recommender")
    with TritonServer(
        root, ports=ServerPorts.free(), models=["recommender"], log_path=root.parent / "triton-forget-recommender.log"
    ) as server:
        yield server


def _lists(client: RecommenderClient, customers: list[str]) -> list[list[tuple[str, float]]]:
    return [[(r.product_id, r.score) for r in got] for got in client.recommend(customers, k=10)]


def _new(client: RecommenderClient, customer: str) -> list[Recommendation]:
    return client.recommend([customer], k=10, profile=PROFILE)[0]


def test_forget_erases_the_files_and_the_running_servers_memory(
    served: TritonServer,
    recommender_trained: RecommenderTrainResult,
    tmp_path: Path,
    audit: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, url = served.repo.root, served.grpc_url
    version = root / "recommender" / recommender_trained.path.name
    ids = list(RecommenderScorer.load(recommender_trained.path).customer_index)
    gone = [ids[3], ids[len(ids) // 2]]  # rows before others': a misaligned row would change the others' lists
    kept = [c for c in ids if c not in gone][::20] + ids[-2:]

    with RecommenderClient(url) as client:
        before = _lists(client, kept)
        assert len(_lists(client, gone)) == 2  # known to the server before (an unknown id without a profile fails)
        assert [r.product_id for r in _new(client, gone[0])] != [r.product_id for r in _new(client, "new-customer")]

    assert main(["forget", *gone, "--url", url, "--repo", str(root)]) == 0
    out = capsys.readouterr()
    assert f"recommender: {version}: 2 of 2 subjects found and removed\n" in out.out
    assert (
        f"recommender: server {url}: 2 of 2 subjects found and removed "
        f"(reloaded: it serves version {version.name} from the erased files)\n"
    ) in out.out

    with RecommenderClient(url) as client:
        for customer in gone:
            with pytest.raises(InvalidInputError, match="not known to this version and the request carries no profile"):
                client.recommend([customer], k=10)
            assert _new(client, customer) == _new(client, "new-customer")  # no history of theirs is left
        assert _lists(client, kept) == before
        assert client.served_version() == version.name

    trail = Trail.from_env()
    lines = [json.loads(x) for x in audit.read_text(encoding="utf-8").splitlines()]
    # The fraud store asks the same server too: its lines name the same place, under its own store.
    on_server = {
        x["subject"]: x["removed"]
        for x in lines
        if x.get("place") == f"server {url}" and x.get("store") == "recommender"
    }
    assert on_server == {trail.subject(c): 1 for c in gone}
    for raw in gone:
        assert raw not in out.out + out.err and raw not in audit.read_text(encoding="utf-8")
        assert raw not in served.log_text()
