"""The stateful fraud model in the real Triton: one-at-a-time replay equals the batch kernels, the state
survives a reload and concurrent requests, and a bad request fails alone."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
import xgboost as xgb
from tritonclient.utils import InferenceServerException

from clients import FraudClient
from engine.errors import InvalidInputError
from engine.families.fraud import FraudTrainResult, canonical, transaction_matrix
from engine.serving.server import TritonServer
from kernels.transactions import feature_names, transaction_features
from tests.conftest import FRAUD_COLUMNS, FRAUD_DELAY_US

T0 = 1_900_000_000_000_000  # far after the generated history: cards and terminals of these tests are new
COUNTS = [j for j, n in enumerate(feature_names()) if "count" in n or n in {"hour", "weekday"}]
COUNT_1H = feature_names().index("card_count_1h")


def _auth(txid: str, card: str, time: int, amount: float = 20.0, terminal: str = "it-1") -> dict[str, list]:
    return {
        "transaction_id": [txid],
        "card_id": [card],
        "terminal_id": [terminal],
        "amount": [amount],
        "timestamp": [time],
    }


def test_replaying_the_day_through_the_server_equals_the_batch_kernels(
    server: TritonServer,
    fraud_trained: FraudTrainResult,
    transactions: pl.DataFrame,
    fraud_split: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    day = canonical(fraud_split[1], FRAUD_COLUMNS)
    got_x, got_p = [], []
    with FraudClient(server.grpc_url) as fraud:
        for row in day.iter_rows(named=True):
            out = fraud.authorize(
                {
                    "transaction_id": [row["transaction_id"]],
                    "card_id": [row["card"]],
                    "terminal_id": [row["terminal"]],
                    "amount": [row["amount"]],
                    "timestamp": [row["time"]],
                },
                features=True,
            )
            got_x.append(out["features"][0])
            got_p.append(out["fraud_probability"][0])
            if row["label"]:
                fraud.report([row["transaction_id"]], [1])
    batch = transaction_features(canonical(transactions, FRAUD_COLUMNS).lazy(), delay_us=FRAUD_DELAY_US).collect()
    batch = batch.tail(day.height)
    want_x = batch.select(feature_names()).to_numpy()
    got = np.vstack(got_x)
    np.testing.assert_array_equal(got[:, COUNTS], want_x[:, COUNTS])
    np.testing.assert_allclose(got, want_x, rtol=1e-9, atol=1e-6)
    booster = xgb.Booster(model_file=str(fraud_trained.path / "model.ubj"))
    want_p = booster.predict(xgb.DMatrix(transaction_matrix(batch), feature_names=feature_names()))
    np.testing.assert_allclose(np.array(got_p), want_p, rtol=1e-5, atol=1e-6)
    assert len(got_p) == day.height > 100


def test_state_survives_a_model_reload(server: TritonServer) -> None:
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    with FraudClient(server.grpc_url) as fraud:
        fraud.authorize(_auth("reload-1", "reload-card", T0))
        raw.unload_model("fraud")
        raw.load_model("fraud")
        assert raw.is_model_ready("fraud")
        out = fraud.authorize(_auth("reload-2", "reload-card", T0 + 1_000_000), features=True)
    assert out["features"][0, COUNT_1H] == 2  # the first authorization was remembered across the reload


def test_concurrent_authorizations_of_one_card_each_see_the_ones_before(server: TritonServer) -> None:
    n = 48

    def send(i: int) -> float:
        with FraudClient(server.grpc_url) as fraud:
            return float(
                fraud.authorize(_auth(f"conc-{i}", "busy-card", T0 + 5), features=True)["features"][0, COUNT_1H]
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = sorted(pool.map(send, range(n)))
    assert counts == list(range(1, n + 1))  # recorded one at a time: no count seen twice, none lost


def test_a_bad_authorization_fails_alone(server: TritonServer) -> None:
    with FraudClient(server.grpc_url) as fraud:
        fraud.authorize(_auth("bad-0", "bad-card", T0 + 10_000_000))
        cases = [
            (_auth("bad-1", "bad-card", T0), "earlier than this card's previous authorization"),
            (_auth("bad-2", "bad-card", T0 + 20_000_000, amount=float("nan")), "finite"),
            (_auth("bad-0", "bad-card", T0 + 30_000_000), "already scored"),
            ({k: v for k, v in _auth("bad-3", "bad-card", T0).items() if k != "amount"}, "'amount' is missing"),
            # The state keeps ids for weeks: a megabyte id would grow the server a megabyte at a time.
            (_auth("bad-5", "bad-card", T0 + 50_000_000, terminal="T" * (1 << 20)), "at most 256 bytes"),
        ]
        with ThreadPoolExecutor(max_workers=len(cases) + 1) as pool:
            good = pool.submit(fraud.authorize, _auth("good-1", "good-card", T0), features=True)
            errors = [pool.submit(fraud.authorize, body) for body, _ in cases]
            for future, (_, fragment) in zip(errors, cases, strict=True):
                with pytest.raises(InvalidInputError, match=fragment):
                    future.result()
            assert good.result()["decision"][0] in {"approve", "review", "decline"}
        with pytest.raises(InvalidInputError, match="names no authorization"):
            fraud.report(["never-scored"], [1])
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        wrong = grpcclient.InferInput("amount", [1, 1], "FP32")
        wrong.set_data_from_numpy(np.array([[1.0]], dtype=np.float32))
        with pytest.raises(InferenceServerException) as info:
            raw.infer("fraud", [wrong])
        assert "INVALID_ARG" in str(info.value.status())
        assert raw.is_server_live() and raw.is_model_ready("fraud")
        after = fraud.authorize(_auth("bad-4", "bad-card", T0 + 40_000_000), features=True)
    assert after["features"][0, COUNT_1H] == 2  # only bad-0 and bad-4 were recorded


def test_the_decision_and_reasons_travel_as_numbers_the_config_names(
    server: TritonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config("fraud", as_json=True)["config"]
    decode = json.loads(config["parameters"]["decode"]["string_value"])
    assert decode["decision_code"][0] == "decision" and decode["reason_index"][0] == "reason_codes"
    answers, reasons = decode["decision_code"][1], decode["reason_index"][1]
    rng = np.random.default_rng(5)
    n = 300
    with FraudClient(server.grpc_url) as fraud:
        # One request asks for the texts and the numbers: each number indexes its text, -1 the empty reason.
        arrays = {
            "transaction_id": np.array([[f"num-{i}".encode()] for i in range(n)], dtype=object),
            "card_id": np.array([[f"num-card-{i % 30}".encode()] for i in range(n)], dtype=object),
            "terminal_id": np.array([[b"num-t"]] * n, dtype=object),
            "amount": np.round(rng.gamma(1.0, 400.0, (n, 1)), 2),
            "timestamp": (T0 + 2_000_000_000 + 60_000_000 * np.arange(n)).reshape(-1, 1),
        }
        both = fraud.infer_arrays(arrays, outputs=["decision", "decision_code", "reason_codes", "reason_index"])
        texts = [d.decode() for d in both["decision"].ravel()]
        assert [answers[i] for i in both["decision_code"].ravel()] == texts
        named = [[reasons[i] if i >= 0 else "" for i in row] for row in both["reason_index"].tolist()]
        assert named == [[r.decode() for r in row] for row in both["reason_codes"].tolist()]
        assert set(texts) - {"approve"}, "no authorization was flagged: the reasons were not compared"
        # The client asks for the numbers and answers the texts.
        asked: list[list[str]] = []
        send = fraud._send
        monkeypatch.setattr(
            fraud, "_send", lambda model, a, names, rid: asked.append(names) or send(model, a, names, rid)
        )
        out = fraud.authorize(_auth("num-last", "num-card-0", T0 + 2_000_000_000 + 60_000_000 * n))
        assert sorted(asked[0]) == ["decision_code", "fraud_probability", "reason_index"]
        assert out["decision"][0] in answers[:3] and out["reason_codes"].shape == (1, 3)
        assert fraud.forget(["num-card-1", "never-seen"]) == [True, False]
