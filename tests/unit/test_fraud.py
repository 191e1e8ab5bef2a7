"""Transaction kernels against a pandas reference, online state against the kernels (parity), the scorer's
checks, snapshots, and ``finscore train fraud``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.errors import InvalidInputError, SchemaError
from engine.families.contract import reason_names, top_indices
from engine.families.fraud import FraudScorer, FraudState, FraudTrainResult, canonical, replay_state, transaction_matrix
from engine.families.fraud.scorer import ANSWERS, CODES, LIVE_STATE
from engine.families.metrics import card_precision_at_k
from kernels.transactions import DAY_US, feature_names, rfm, transaction_features, window_max, window_max_ref
from tests.conftest import FRAUD_COLUMNS, FRAUD_DELAY_US
from tests.fraud_reference import reference_features

COUNTS = [n for n in feature_names() if "count" in n or n in {"hour", "weekday"}]
FLOATS = [n for n in feature_names() if n not in COUNTS]


def _kernel_features(tx: pl.DataFrame) -> pl.DataFrame:
    return transaction_features(tx.lazy(), delay_us=FRAUD_DELAY_US).collect()


def _assert_same(got: np.ndarray, want: np.ndarray, names: list[str]) -> None:
    for j, name in enumerate(names):
        if name in COUNTS:
            np.testing.assert_array_equal(got[:, j], want[:, j], err_msg=name)
        else:
            np.testing.assert_allclose(got[:, j], want[:, j], rtol=1e-9, atol=1e-6, err_msg=name)


@given(st.lists(st.tuples(st.integers(0, 2), st.floats(0, 100), st.integers(0, 3)), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_window_max_equals_its_reference(rows: list[tuple[int, float, int]]) -> None:
    rows.sort(key=lambda r: r[0])
    group = np.array([r[0] for r in rows])
    amount = np.array([r[1] for r in rows])
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    first = np.empty(len(rows), dtype=np.int64)
    for g, lo in enumerate(starts):
        hi = starts[g + 1] if g + 1 < len(starts) else len(rows)
        edge = lo
        for i in range(lo, hi):  # windows reaching back a random, never-shrinking distance
            edge = min(i, max(edge, i - rows[i][2]))
            first[i] = edge
    np.testing.assert_array_equal(window_max(starts, first, amount), window_max_ref(starts, first, amount))


def test_kernels_equal_the_pandas_reference(transactions: pl.DataFrame) -> None:
    tx = canonical(transactions.head(700), FRAUD_COLUMNS)
    got = _kernel_features(tx).select(feature_names()).to_numpy()
    want = reference_features(tx.to_pandas(), delay_us=FRAUD_DELAY_US)[feature_names()].to_numpy(dtype=float)
    _assert_same(got, want, feature_names())


def test_a_label_never_reaches_a_feature_before_the_delay(transactions: pl.DataFrame) -> None:
    tx = canonical(transactions, FRAUD_COLUMNS)
    flipped = tx.with_columns(pl.lit(1, dtype=pl.Int8).alias("label"))
    a, b = _kernel_features(tx), _kernel_features(flipped)
    early = (pl.col("time") - pl.col("time").min()) < FRAUD_DELAY_US
    risk = [n for n in feature_names() if n.startswith("terminal_risk")]
    assert a.filter(early).select(risk).equals(b.filter(early).select(risk))
    assert not a.select(risk).equals(b.select(risk))  # later, labels do count


def test_replaying_a_day_one_authorization_at_a_time_equals_the_batch(
    transactions: pl.DataFrame, fraud_split: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    history, day = (canonical(f, FRAUD_COLUMNS) for f in fraud_split)
    batch = _kernel_features(canonical(transactions, FRAUD_COLUMNS)).tail(day.height)
    state = replay_state(history, delay_us=FRAUD_DELAY_US, secret=b"k")
    online = []
    for row in day.iter_rows(named=True):
        online.append(state.authorize(row["transaction_id"], row["card"], row["terminal"], row["amount"], row["time"]))
        if row["label"]:
            state.report(row["transaction_id"], 1)
    assert batch["transaction_id"].to_list() == day["transaction_id"].to_list()
    ties = day.group_by("card", "time").len()["len"].max()
    assert ties is not None and ties > 1  # the day holds same-microsecond authorizations of a card
    _assert_same(np.vstack(online), batch.select(feature_names()).to_numpy(), feature_names())


def test_rfm_per_customer(transactions: pl.DataFrame) -> None:
    tx = canonical(transactions, FRAUD_COLUMNS)
    as_of = int(tx["time"].max()) + DAY_US  # type: ignore[arg-type]
    table = rfm(tx.lazy(), as_of_us=as_of, days=3).collect()
    card = tx["card"][0]
    mine = tx.filter(pl.col("card") == card)
    recent = mine.filter(pl.col("time") > as_of - 3 * DAY_US)
    row = table.filter(pl.col("card") == card).row(0, named=True)
    assert row["frequency"] == recent.height
    assert row["monetary_sum"] == pytest.approx(recent["amount"].sum())
    assert row["recency_days"] == pytest.approx((as_of - int(mine["time"].max())) / DAY_US)  # type: ignore[arg-type]


def test_card_precision_leaves_out_cards_found_earlier() -> None:
    day = np.array([0, 0, 1, 1])
    card = np.array(["a", "b", "a", "c"])
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.9, 0.2])
    # Day 0: a is found (1/1). Day 1: a is left out, so c is the top card, and it is genuine (0/1).
    assert card_precision_at_k(day, card, y, p, k=1) == 0.5


@pytest.fixture()
def fresh(fraud_trained: FraudTrainResult, tmp_path: Path) -> FraudScorer:
    """The trained version in a repository of its own, so tests can change its state and snapshots."""
    model = tmp_path / "fraud"
    shutil.copytree(fraud_trained.path.parent, model, ignore=shutil.ignore_patterns("state"))
    return FraudScorer.load(model / fraud_trained.path.name)


def _auth(txid: str, card: str = "c1", amount: float = 10.0, time: int = 1_900_000_000_000_000) -> dict[str, object]:
    return {
        "transaction_id": np.array([txid.encode()], dtype=object),
        "card_id": np.array([card.encode()], dtype=object),
        "terminal_id": np.array([b"t1"], dtype=object),
        "amount": np.array([amount]),
        "timestamp": np.array([time], dtype=np.int64),
    }


def test_served_scores_equal_the_booster_on_batch_features(
    fresh: FraudScorer, transactions: pl.DataFrame, fraud_split: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    assert fresh._forest is not None  # on the CPU the flattened trees predict (kernels.forest), not XGBoost
    day = canonical(fraud_split[1], FRAUD_COLUMNS).head(200)
    out = fresh.score(
        {
            "transaction_id": day["transaction_id"].to_numpy().astype(object),
            "card_id": day["card"].to_numpy().astype(object),
            "terminal_id": day["terminal"].to_numpy().astype(object),
            "amount": day["amount"].to_numpy(),
            "timestamp": day["time"].to_numpy(),
        }
    )
    batch = _kernel_features(canonical(transactions, FRAUD_COLUMNS)).tail(fraud_split[1].height).head(200)
    want = fresh.booster.predict(xgb.DMatrix(transaction_matrix(batch), feature_names=feature_names()))
    np.testing.assert_allclose(out["fraud_probability"], want, rtol=1e-5, atol=1e-6)
    assert set(out["decision"]) <= {"approve", "review", "decline"}
    assert out["reason_codes"].shape == (200, 3)
    assert all(r in feature_names() for r in out["reason_codes"][:, 0] if r)
    flagged = out["decision"] != "approve"
    assert flagged.any() and (out["reason_codes"][flagged, 0] != "").any()
    assert (out["reason_codes"][~flagged] == "").all()  # approvals carry no reasons
    # The reasons are XGBoost's TreeSHAP's, computed over the flattened trees (kernels.pathshap).
    x = transaction_matrix(batch)
    theirs = fresh.booster.predict(xgb.DMatrix(x, feature_names=feature_names()), pred_contribs=True)[:, :-1]
    np.testing.assert_allclose(fresh.contributions(x), theirs, atol=1e-5)
    named = reason_names(top_indices(theirs[flagged], positive=True), feature_names())
    assert (out["reason_codes"][flagged] == named).all()
    # The numbers answered beside the texts index the names the config publishes, -1 for none.
    assert out["decision_code"].dtype == np.int32 and out["reason_index"].dtype == np.int32
    assert [ANSWERS[i] for i in out["decision_code"]] == out["decision"].tolist()
    assert (reason_names(out["reason_index"], CODES["reason_index"][1]) == out["reason_codes"]).all()
    assert (out["reason_index"][~flagged] == -1).all()


def test_a_bad_request_leaves_the_state_unchanged(fresh: FraudScorer) -> None:
    fresh.score(_auth("a1", time=2_000_000_000_000_000))
    before = fresh.state.cards.copy(), dict(fresh.state.labels)
    two = {
        k: np.concatenate([v, _auth("a3", time=1_000)[k]]) for k, v in _auth("a2", time=2_000_000_000_000_001).items()
    }
    with pytest.raises(InvalidInputError, match="earlier than this card's previous authorization"):
        fresh.score(two)
    assert (fresh.state.cards, fresh.state.labels) == before
    with pytest.raises(InvalidInputError, match="already scored"):
        fresh.score(_auth("a1", time=2_000_000_000_000_002))
    with pytest.raises(InvalidInputError, match="finite"):
        fresh.score(_auth("a4", amount=float("nan"), time=2_000_000_000_000_003))
    with pytest.raises(InvalidInputError, match="'amount' is missing"):
        fresh.score({k: v for k, v in _auth("a5").items() if k != "amount"})
    with pytest.raises(InvalidInputError, match="names no authorization"):
        fresh.score({"transaction_id": np.array([b"never"], dtype=object), "label": np.array([1], dtype=np.int32)})


def test_labels_reach_the_terminal_risk_after_the_delay(fresh: FraudScorer) -> None:
    t0 = 2_100_000_000_000_000
    fresh.score(_auth("x1", card="k1", time=t0))
    fresh.score({"transaction_id": np.array([b"x1"], dtype=object), "label": np.array([1], dtype=np.int32)})
    fresh.score({"transaction_id": np.array([b"x1"], dtype=object), "label": np.array([1], dtype=np.int32)})  # twice
    risk = feature_names().index("terminal_risk_1d")
    soon = fresh.score(_auth("x2", card="k2", time=t0 + FRAUD_DELAY_US // 2))["features"][0, risk]
    later = fresh.score(_auth("x3", card="k3", time=t0 + FRAUD_DELAY_US + 1))["features"][0, risk]
    assert soon == 0.0  # the label exists but is not yet older than the delay
    assert later == 1.0  # x1 is now older than the delay (x2 is not): one transaction, one fraud


def test_state_survives_a_snapshot_and_holds_no_card_number(fresh: FraudScorer) -> None:
    fresh.score(_auth("s1", card="4111111111111111", time=2_200_000_000_000_000))
    path = fresh.snapshot()
    assert path is not None and path == fresh.live_state
    assert b"4111111111111111" not in __import__("gzip").decompress(path.read_bytes())
    again = FraudScorer.load(Path(str(path).replace(LIVE_STATE, fresh.version)))
    a = fresh.score(_auth("s2", card="4111111111111111", time=2_200_000_000_000_001))["features"]
    b = again.score(_auth("s2", card="4111111111111111", time=2_200_000_000_000_001))["features"]
    np.testing.assert_array_equal(a, b)
    assert a[0, feature_names().index("card_count_1h")] == 2


def test_a_broken_snapshot_is_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "state.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(Exception, match="not a readable fraud state snapshot"):
        FraudState.restore(bad, secret=b"k")


def test_canonical_names_a_missing_or_unreadable_column(transactions: pl.DataFrame) -> None:
    with pytest.raises(SchemaError, match="no column 'card_id'"):
        canonical(transactions.drop("card_id"), FRAUD_COLUMNS)
    with pytest.raises(SchemaError, match="must be numeric"):
        canonical(transactions.with_columns(pl.col("amount").cast(pl.String)), FRAUD_COLUMNS)
    with pytest.raises(SchemaError, match="label"):
        canonical(transactions.with_columns(pl.lit("maybe").alias("is_fraud")), FRAUD_COLUMNS)


def test_train_fraud_cli(
    fraud_split: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "tx.csv"
    fraud_split[0].write_csv(data)
    argv = ["train", "fraud", "--data", str(data), "--label", "is_fraud", "--time", "timestamp", "--card", "card_id"]
    argv += ["--terminal", "terminal_id", "--label-delay", "1d", "--train-days", "5", "--gap-days", "1"]
    argv += ["--test-days", "3", "--repo", str(tmp_path / "repo")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fraud version 1 written" in out and "average precision" in out
    assert (tmp_path / "repo" / "fraud" / "config.pbtxt").read_text().count("optional: true") == 7
    assert main([*argv[:-2], "--label-delay", "soon", "--repo", str(tmp_path / "repo")]) == 1
    assert "a duration must be" in capsys.readouterr().err
