"""``finscore forget`` against a real Triton serving the fraud model: the running server forgets the cards in
memory (their next authorization is their first), the version's starting state and the snapshot the server
writes when it stops no longer hold them, and the audit log records the erasure under pseudonyms only."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clients import FraudClient
from engine.cli import build_parser
from engine.families.fraud import FraudTrainResult, canonical
from engine.families.fraud.scorer import INITIAL_STATE, KEY_FILE, LIVE_STATE
from engine.families.fraud.state import card_key
from engine.security.trail import Trail
from engine.serving.server import ServerPorts, TritonServer
from kernels.transactions import feature_names
from tests.conftest import FRAUD_COLUMNS

NAMES = feature_names()
COUNT_1H, SINCE = NAMES.index("card_count_1h"), NAMES.index("seconds_since_previous")
CARD_FEATURES = [
    j for j, n in enumerate(NAMES) if n.startswith("card_") or n in {"seconds_since_previous", "amount_zscore"}
]
T0 = 1_900_000_000_000_000  # far after the generated history
SECOND = 1_000_000
#: Luhn-valid test card numbers: the session's leak scan also looks for them in the server log.
ERASED_THEN_BACK, ERASED, KEPT = "4111111111111111", "5555555555554444", "kept-card-7"


@pytest.fixture(scope="module")
def served(fraud_trained: FraudTrainResult, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A server of its own on a copy of the fraud model (this module stops it to read what it snapshots)."""
    root = tmp_path_factory.mktemp("forget-repo")
    shutil.copytree(fraud_trained.path.parent, root / "fraud", ignore=shutil.ignore_patterns("state"))
    with TritonServer(
        root, ports=ServerPorts.free(), models=["fraud"], log_path=root.parent / "triton-forget.log"
    ) as server:
        yield server


def _auth(txid: str, card: str, time: int) -> dict[str, list]:
    return {
        "transaction_id": [txid],
        "card_id": [card],
        "terminal_id": ["forget-t"],
        "amount": [30.0],
        "timestamp": [time],
    }


def _cards(path: Path) -> set[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return set(json.load(fh)["cards"])


def test_forget_reaches_the_running_server_its_snapshots_and_the_audit_log(
    served: TritonServer,
    fraud_trained: FraudTrainResult,
    fraud_split: tuple[pl.DataFrame, pl.DataFrame],
    tmp_path: Path,
    audit: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = served.repo.root
    model = root / "fraud"
    secret = (model / KEY_FILE).read_bytes()
    starting = model / fraud_trained.path.name / INITIAL_STATE
    # The card of the history's last transaction: held by the version's starting state, with recent history.
    last = canonical(fraud_split[0], FRAUD_COLUMNS).sort("time").tail(1)
    held, held_at = str(last["card"][0]), int(last["time"][0])
    before = _cards(starting)
    assert card_key(held, secret) in before

    with FraudClient(served.grpc_url) as fraud:
        for k in range(3):
            x = fraud.authorize(_auth(f"fg-a{k}", ERASED_THEN_BACK, T0 + k * SECOND), features=True)["features"][0]
            fraud.authorize(_auth(f"fg-b{k}", ERASED, T0 + k * SECOND))
            fraud.authorize(_auth(f"fg-c{k}", KEPT, T0 + k * SECOND))
        assert x[COUNT_1H] == 3
        h = fraud.authorize(_auth("fg-h0", held, held_at + SECOND), features=True)["features"][0]
        assert h[COUNT_1H] >= 2 and not math.isnan(h[SINCE])  # the history is there

    parser = build_parser()
    args = parser.parse_args(["forget", ERASED_THEN_BACK, ERASED, held, "--url", served.grpc_url, "--repo", str(root)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"fraud: server {served.grpc_url}: 3 of 3 subjects found and removed" in out
    assert f"fraud: {starting}: 1 of 3 subjects found and removed" in out
    assert ERASED_THEN_BACK not in out and ERASED not in out

    with FraudClient(served.grpc_url) as fraud:
        again = fraud.authorize(_auth("fg-a9", ERASED_THEN_BACK, T0 + 9 * SECOND), features=True)["features"][0]
        never = fraud.authorize(_auth("fg-n9", "never-seen-card", T0 + 9 * SECOND), features=True)["features"][0]
        kept = fraud.authorize(_auth("fg-c9", KEPT, T0 + 9 * SECOND), features=True)["features"][0]
        h = fraud.authorize(_auth("fg-h9", held, held_at + 2 * SECOND), features=True)["features"][0]
    np.testing.assert_array_equal(again[CARD_FEATURES], never[CARD_FEATURES])  # a first-seen card
    assert again[COUNT_1H] == 1 and math.isnan(again[SINCE])
    assert h[COUNT_1H] == 1 and math.isnan(h[SINCE])
    assert kept[COUNT_1H] == 4  # a card not named keeps its history
    assert _cards(starting) == before - {card_key(held, secret)}

    served.stop()  # unloads the model: it snapshots what it holds
    live = _cards(model / LIVE_STATE)
    assert card_key(ERASED, secret) not in live
    assert card_key(KEPT, secret) in live and card_key(ERASED_THEN_BACK, secret) in live  # scored after: new data
    assert ERASED not in served.log_text() and ERASED_THEN_BACK not in served.log_text()

    trail = Trail.from_env()
    lines = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    on_server = {
        x["subject"]: x["removed"] for x in lines if x["event"] == "erasure" and x["place"].startswith("server")
    }
    assert on_server == {trail.subject(c): 1 for c in (ERASED_THEN_BACK, ERASED, held)}
    assert ERASED not in audit.read_text() and ERASED_THEN_BACK not in audit.read_text()
