"""Erasure (``finscore forget``) without a server: the fraud state forgets a card (in the process, in its
snapshots and in Redis), the served model answers a forget request, the registry runs every store, and the
audit log records each erasure under the subject's pseudonym, never the id itself."""

from __future__ import annotations

import gzip
import io
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import engine.security.erasure as erasure
from engine.cli import build_parser
from engine.errors import FinscoreError
from engine.families.face.gallery import default_gallery
from engine.families.fraud import FraudState, FraudTrainResult, fraud_config
from engine.families.fraud.redis_state import RedisFraudState
from engine.families.fraud.scorer import INITIAL_STATE, KEY_FILE, LIVE_STATE, PARAMS_FILE
from engine.families.fraud.state import card_key
from engine.security.erasure import Erased, ErasureContext, erasure_store, forget
from engine.security.trail import Trail
from engine.serving.config import render_config
from engine.serving.server import free_port
from kernels.transactions import feature_names
from tests.conftest import FRAUD_DELAY_US
from tests.unit.test_serving import FakeRequest, fake_pb_utils, fraud_shell

NAMES = feature_names()
COUNT_1H, SINCE = NAMES.index("card_count_1h"), NAMES.index("seconds_since_previous")
CARD_FEATURES = [
    j for j, n in enumerate(NAMES) if n.startswith("card_") or n in {"seconds_since_previous", "amount_zscore"}
]
SECRET = b"s" * 32
T0 = 1_900_000_000_000_000
#: A Luhn-valid card number and a customer id as the demo data names them: the leak scan looks for both.
PAN, CUSTOMER = "4111111111111111", "C0000000042"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _state(*cards: str, start: int = T0) -> FraudState:
    """A state that scored two authorizations of each card, a second apart."""
    state = FraudState(delay_us=FRAUD_DELAY_US, secret=SECRET)
    for i, card in enumerate(cards):
        for k in range(2):
            state.authorize(f"tx-{i}-{k}", card, "term-1", 10.0 + k, start + k * 1_000_000)
    return state


def _repo(root: Path, versions: dict[int, FraudState], live: FraudState | None) -> Path:
    """A fraud model folder with only what erasure reads: card key, versions' states and params, live state."""
    model = root / "fraud"
    model.mkdir(parents=True)
    (model / KEY_FILE).write_bytes(SECRET)
    for v, state in versions.items():
        state.snapshot(model / str(v) / INITIAL_STATE)
        (model / str(v) / PARAMS_FILE).write_text(json.dumps({"delay_us": FRAUD_DELAY_US}), encoding="utf-8")
    if live is not None:
        live.snapshot(model / LIVE_STATE)
    return root


def _body(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        body: dict[str, Any] = json.load(fh)
    return body


def _first_seen(state: FraudState | RedisFraudState, card: str, time: int) -> np.ndarray:
    """The card features of an authorization of ``card`` beside those of a card never seen, same amount and time."""
    got = state.authorize(f"again-{card}-{time}", card, "term-2", 12.0, time)
    new = state.authorize(f"new-{card}-{time}", f"never-seen-{card}", "term-3", 12.0, time)
    np.testing.assert_array_equal(got[CARD_FEATURES], new[CARD_FEATURES])
    return got


# -- the state ----------------------------------------------------------------------------------------------------
def test_the_state_forgets_a_card_and_only_that_card() -> None:
    state = _state(PAN, "other")
    labels = dict(state.labels)
    assert state.forget([PAN, "never-seen"]) == [True, False]
    assert card_key(PAN, SECRET) not in state.cards and card_key("other", SECRET) in state.cards
    assert state.labels == labels  # transactions, not cards: they stay
    assert state.forget([PAN]) == [False]
    x = _first_seen(state, PAN, T0 + 5_000_000)
    assert x[COUNT_1H] == 1 and math.isnan(x[SINCE])
    assert state.authorize("tx-other", "other", "term-1", 1.0, T0 + 5_000_000)[COUNT_1H] == 3  # the other kept


def test_redis_forgets_a_card_and_only_that_card(redis_url: str) -> None:
    state = RedisFraudState.connect(redis_url, delay_us=FRAUD_DELAY_US, secret=SECRET)
    for k in range(2):
        state.authorize_batch([f"r-{k}", f"o-{k}"], [PAN, "other"], ["t", "t"], [5.0, 6.0], [T0 + k, T0 + k])
    keys = {card: state._key("card", card_key(card, SECRET)) for card in (PAN, "other")}
    assert state.client.exists(keys[PAN]) and state.client.exists(keys["other"])
    assert state.forget([PAN, "never-seen", PAN]) == [True, False, False]
    assert not state.client.exists(keys[PAN]) and state.client.exists(keys["other"])
    assert state.client.exists(state._key("tx", "r-0"))  # a transaction holds no card: it stays
    assert state.forget([]) == []
    x = _first_seen(state, PAN, T0 + 10)
    assert x[COUNT_1H] == 1 and math.isnan(x[SINCE])


# -- the fraud store ----------------------------------------------------------------------------------------------
def test_the_snapshots_lose_exactly_that_cards_digest(tmp_path: Path, audit: Path) -> None:
    repo = _repo(tmp_path / "repo", {1: _state(PAN, "a"), 2: _state("a", "b")}, live=_state(PAN, "b", "c"))
    model = repo / "fraud"
    v1, v2, live = model / "1" / INITIAL_STATE, model / "2" / INITIAL_STATE, model / LIVE_STATE
    before = {p: _body(p) for p in (v1, v2, live)}
    untouched = v2.read_bytes()
    digest = card_key(PAN, SECRET)
    assert digest in before[v1]["cards"] and digest in before[live]["cards"]

    report = forget([PAN, CUSTOMER], ErasureContext(repo=repo))

    for path in (v1, live):
        after = _body(path)
        assert set(after["cards"]) == set(before[path]["cards"]) - {digest}
        assert {k: v for k, v in after.items() if k != "cards"} == {
            k: v for k, v in before[path].items() if k != "cards"
        }
        assert all(after["cards"][k] == before[path]["cards"][k] for k in after["cards"])
    assert v2.read_bytes() == untouched  # held neither card: not rewritten
    assert not list(model.rglob("*.partial"))
    fraud = {r.place: r.removed for r in report.results if r.store == "fraud"}
    assert fraud == {str(v1): (1, 0), str(v2): (0, 0), str(live): (1, 0)}
    assert report.complete and report.audit_log == audit
    assert forget([PAN], ErasureContext(repo=repo)).results[0].removed == (0,)  # again: nothing left


def test_the_fraud_store_erases_redis_in_each_versions_namespace(tmp_path: Path, audit: Path, redis_url: str) -> None:
    repo = _repo(tmp_path / "repo", {1: _state("a")}, live=None)
    state = RedisFraudState.connect(redis_url, delay_us=FRAUD_DELAY_US, secret=SECRET)
    state.authorize_batch(["r-1", "o-1"], [PAN, "other"], ["t", "t"], [5.0, 6.0], [T0, T0])
    report = forget([PAN, CUSTOMER], ErasureContext(repo=repo, redis_url=redis_url))
    (shared,) = [r for r in report.results if r.place.startswith("redis")]
    assert shared.removed == (1, 0) and shared.complete
    assert state.forget([PAN, "other"]) == [False, True]


def test_an_unreachable_redis_leaves_the_erasure_incomplete(tmp_path: Path, audit: Path) -> None:
    repo = _repo(tmp_path / "repo", {1: _state(PAN)}, live=None)
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    report = forget([PAN], ErasureContext(repo=repo, redis_url=url))
    (shared,) = [r for r in report.results if r.place.startswith("redis")]
    assert not shared.complete and "does not answer" in shared.note and not report.complete
    (files,) = [r for r in report.results if r.place.endswith(INITIAL_STATE)]
    assert files.removed == (1,)  # the files were erased all the same
    assert "hunter2" not in audit.read_text() and "hunter2" not in shared.line()


def test_no_trained_fraud_model_is_said(tmp_path: Path, audit: Path) -> None:
    report = forget([PAN], ErasureContext(repo=tmp_path / "empty"))
    (only,) = [r for r in report.results if r.store == "fraud"]
    assert only.removed == (0,) and "no trained fraud model" in only.note and report.complete


# -- the registry and the audit log -------------------------------------------------------------------------------
@pytest.fixture()
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The registry with the built-in stores, restored after the test."""
    stores = erasure.stores()
    monkeypatch.setattr(erasure, "_STORES", dict(stores))
    return stores


def test_a_registered_store_is_run_and_every_erasure_is_audited_under_a_pseudonym(
    tmp_path: Path, audit: Path, registry: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[list[str], ErasureContext]] = []

    @erasure_store("test-crm")
    def crm(subjects: Sequence[str], ctx: ErasureContext) -> list[Erased]:
        calls.append((list(subjects), ctx))
        return [Erased("test-crm", "crm-db", tuple(int(s == CUSTOMER) for s in subjects))]

    parser = build_parser()
    repo = _repo(tmp_path / "repo", {1: _state(PAN)}, live=None)
    args = parser.parse_args(["forget", CUSTOMER, PAN, CUSTOMER, "--repo", str(repo), "--no-server"])
    assert args.func(args) == 0

    assert calls == [([CUSTOMER, PAN], ErasureContext(repo=repo, url=None, tls=None, redis_url=None))]
    out = capsys.readouterr()
    assert "test-crm: crm-db: 1 of 2 subjects found and removed" in out.out
    assert f"audit: 8 erasure lines appended to {audit}" in out.out
    trail = Trail.from_env()
    lines = [line for line in _lines(audit) if line["event"] == "erasure"]
    assert {(x["subject"], x["store"], x["place"], x["removed"]) for x in lines} == {
        (trail.subject(CUSTOMER), "fraud", str(repo.resolve() / "fraud" / "1" / INITIAL_STATE), 0),
        (trail.subject(PAN), "fraud", str(repo.resolve() / "fraud" / "1" / INITIAL_STATE), 1),
        (trail.subject(CUSTOMER), "recommender", str(repo.resolve() / "recommender"), 0),
        (trail.subject(PAN), "recommender", str(repo.resolve() / "recommender"), 0),
        (trail.subject(CUSTOMER), "face", str(default_gallery()), 0),
        (trail.subject(PAN), "face", str(default_gallery()), 0),
        (trail.subject(CUSTOMER), "test-crm", "crm-db", 1),
        (trail.subject(PAN), "test-crm", "crm-db", 0),
    }
    for raw in (PAN, CUSTOMER):
        assert raw not in audit.read_text() and raw not in out.out + out.err


def test_a_failing_store_is_audited_then_raised(tmp_path: Path, audit: Path, registry: dict[str, Any]) -> None:
    @erasure_store("test-broken")
    def broken(subjects: Sequence[str], ctx: ErasureContext) -> list[Erased]:
        raise FinscoreError("the CRM database does not answer")

    with pytest.raises(FinscoreError, match="CRM database"):
        forget([CUSTOMER], ErasureContext(repo=tmp_path))
    failed = [x for x in _lines(audit) if x.get("store") == "test-broken"]
    assert len(failed) == 1 and failed[0]["complete"] is False and "does not answer" in failed[0]["note"]
    assert CUSTOMER not in audit.read_text()


def test_a_name_registered_twice_is_refused(registry: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        erasure_store("fraud")(lambda subjects, ctx: [])


def test_no_server_at_the_url_is_said_not_failed(
    tmp_path: Path, audit: Path, registry: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    url = f"127.0.0.1:{free_port()}"
    args = parser.parse_args(["forget", PAN, "--repo", str(tmp_path), "--url", url])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"fraud: server {url}: 0 of 1 subject found and removed (no server at {url}: a server running" in out
    assert "it will write the card back" in out and PAN not in out


def test_an_empty_id_is_refused(tmp_path: Path, audit: Path) -> None:
    with pytest.raises(FinscoreError, match="ID number 2 is empty"):
        forget([PAN, " "], ErasureContext(repo=tmp_path))
    assert not audit.exists()


# -- the served model ---------------------------------------------------------------------------------------------
def test_training_writes_the_generators_config_with_the_forget_input(fraud_trained: FraudTrainResult) -> None:
    text = (fraud_trained.path.parent / "config.pbtxt").read_text(encoding="utf-8")
    assert text == render_config(fraud_config())
    assert '{ name: "forget" data_type: TYPE_INT32 dims: [ 1 ] optional: true }' in text
    assert '{ name: "transaction_id" data_type: TYPE_STRING dims: [ 1 ] optional: true }' in text


@pytest.fixture()
def fraud_model(fraud_trained: FraudTrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fraud model.py on a copy of the trained version, with a fake ``triton_python_backend_utils``."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    m = fraud_shell(fraud_trained.path, tmp_path / "fraud")
    yield m
    m.finalize()


def _column(values: list[Any], dtype: Any = object) -> np.ndarray:
    if dtype is object:
        return np.array([str(v).encode() for v in values], dtype=object).reshape(-1, 1)
    return np.array(values, dtype=dtype).reshape(-1, 1)


def _authorization(txid: str, card: str, time: int) -> FakeRequest:
    return FakeRequest(
        {
            "transaction_id": _column([txid]),
            "card_id": _column([card]),
            "terminal_id": _column(["term-1"]),
            "amount": _column([20.0], np.float64),
            "timestamp": _column([time], np.int64),
        }
    )


def test_the_served_model_forgets_cards_in_memory_and_never_logs_them(
    fraud_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    forget_request = FakeRequest({"card_id": _column([PAN, "never-seen"]), "forget": _column([1, 1], np.int32)})
    bad = [
        ({"card_id": _column([PAN]), "forget": _column([0], np.int32)}, "'forget' must be 1"),
        (
            {"transaction_id": _column(["x"]), "card_id": _column([PAN]), "forget": _column([1], np.int32)},
            "'transaction_id' cannot come with 'forget'",
        ),
        ({"forget": _column([1], np.int32)}, "'card_id' is missing"),
        ({"card_id": _column([PAN]), "amount": _column([1.0], np.float64)}, "'transaction_id' is missing"),
    ]
    responses = fraud_model.execute(
        [
            _authorization("m-1", PAN, T0),
            _authorization("m-2", PAN, T0 + 1_000_000),
            forget_request,
            *(FakeRequest(arrays) for arrays, _ in bad),
            _authorization("m-3", PAN, T0 + 2_000_000),
        ]
    )
    assert responses[1].outputs["features"][0, COUNT_1H] == 2
    answer = responses[2]
    assert answer.error is None
    assert answer.outputs["decision"].tolist() == [[b"forgotten"], [b"unknown"]]
    assert answer.outputs["fraud_probability"].shape == (2, 1) and np.isnan(answer.outputs["fraud_probability"]).all()
    assert answer.outputs["reason_codes"].shape == (2, 3) and answer.outputs["features"].shape == (2, len(NAMES))
    for response, (_, fragment) in zip(responses[3:-1], bad, strict=True):
        assert response.error.code == "INVALID_ARG" and fragment in response.error.message
        assert PAN not in response.error.message
    again = responses[-1].outputs["features"][0]
    assert again[COUNT_1H] == 1 and math.isnan(again[SINCE])  # scored as the card's first authorization
    assert PAN not in caplog.text


def test_ids_from_a_file_or_standard_input_never_reach_the_command_line(
    tmp_path: Path, audit: Path, registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    @erasure_store("test-ids")
    def store(subjects: Sequence[str], ctx: ErasureContext) -> list[Erased]:
        seen.append(list(subjects))
        return [Erased("test-ids", "db", tuple(0 for _ in subjects))]

    parser = build_parser()
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"{CUSTOMER}\n\n  {PAN}  \n", encoding="utf-8")
    common = ["--repo", str(tmp_path), "--no-server"]
    args = parser.parse_args(["forget", "--ids-file", str(ids_file), *common])
    assert args.func(args) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PAN}\n{CUSTOMER}\n"))
    args = parser.parse_args(["forget", "--ids-file", "-", *common])
    assert args.func(args) == 0
    assert seen[0] == [CUSTOMER, PAN] and sorted(seen[1]) == sorted(seen[0])

    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    for argv, words in (
        (["--ids-file", str(tmp_path / "empty.txt")], "holds no id"),
        (["--ids-file", str(tmp_path / "missing.txt")], "cannot be read"),
        ([], "give the ids to erase"),
    ):
        args = parser.parse_args(["forget", *argv, *common])
        with pytest.raises(FinscoreError, match=words):
            args.func(args)
    assert len(seen) == 2


def test_a_retrain_from_a_file_that_still_holds_an_erased_card_leaves_it_out(
    tmp_path: Path, audit: Path, fraud_split: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    """Erasure outlives the next version: training reads the audit log's erasure lines and leaves the card out of
    the model and of the state the version starts from, though the file still holds it."""
    from engine.families.fraud import train_fraud
    from engine.serving.repository import ModelRepository
    from tests.conftest import FRAUD_COLUMNS

    history = fraud_split[0]
    path = tmp_path / "history.parquet"
    history.write_parquet(path)
    repo = ModelRepository(tmp_path / "repo")

    def train() -> FraudTrainResult:
        return train_fraud(
            path, columns=FRAUD_COLUMNS, delay_us=FRAUD_DELAY_US, train_days=5, gap_days=1, test_days=3, repo=repo,
            threads=2,
        )  # fmt: skip

    counts = history.group_by("card_id").len().sort("len", descending=True)
    card, kept = str(counts["card_id"][0]), str(counts["card_id"][1])
    first = train()
    assert first.rows["erased_cards"] == 0 and first.rows["history"] == history.height
    erased = forget([card], ErasureContext(repo=repo.root))
    assert {r.place: r.removed for r in erased.results if r.store == "fraud"}[str(first.path / INITIAL_STATE)] == (1,)

    second = train()

    assert second.rows["erased_cards"] == 1
    assert second.rows["erased_left_out"] == counts["len"][0]
    assert second.rows["history"] == history.height - counts["len"][0]
    places = {r.place: r.removed for r in forget([card, kept], ErasureContext(repo=repo.root)).results}
    assert places[str(second.path / INITIAL_STATE)] == (0, 1)  # the erased card is not there; the other one is
