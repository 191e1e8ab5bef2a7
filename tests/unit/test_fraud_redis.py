"""The fraud state in a real Redis: the same features as the batch kernels, no update lost when two states
(two servers) score the same card at once, all-or-nothing batches, one round trip per request, keys that
expire once idle, and a clear error when Redis is away."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import redis

from engine.errors import InvalidInputError
from engine.families.fraud import FraudScorer, FraudTrainResult, canonical, replay_state
from engine.families.fraud.redis_state import (
    ENV_VAR,
    RedisFraudState,
    StateUnavailableError,
    _pack,
    default_ttl_ms,
)
from engine.families.fraud.state import FraudState, card_key
from engine.serving.server import free_port
from kernels.transactions import feature_names, transaction_features
from tests.conftest import FRAUD_COLUMNS, FRAUD_DELAY_US

NAMES = feature_names()
COUNTS = [j for j, n in enumerate(NAMES) if "count" in n or n in {"hour", "weekday"}]
COUNT_1H, SUM_1H = NAMES.index("card_count_1h"), NAMES.index("card_sum_1h")
T0 = 1_900_000_000_000_000
SECRET = b"k" * 32


def _state(url: str) -> RedisFraudState:
    return RedisFraudState.connect(url, delay_us=FRAUD_DELAY_US, secret=SECRET)


def _batch(tx: pl.DataFrame) -> pl.DataFrame:
    return transaction_features(tx.lazy(), delay_us=FRAUD_DELAY_US).collect()


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_array_equal(got[:, COUNTS], want[:, COUNTS])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)


def test_a_day_replayed_through_redis_equals_the_batch_kernels(
    redis_url: str, transactions: pl.DataFrame, fraud_split: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    history, day = (canonical(f, FRAUD_COLUMNS) for f in fraud_split)
    first, second = _state(redis_url), _state(redis_url)  # two servers sharing one Redis
    first.load(replay_state(history, delay_us=FRAUD_DELAY_US, secret=SECRET))
    online = []
    for i, row in enumerate(day.iter_rows(named=True)):
        server = (first, second)[i % 2]
        online.append(server.authorize(row["transaction_id"], row["card"], row["terminal"], row["amount"], row["time"]))
        if row["label"]:
            (second, first)[i % 2].report(row["transaction_id"], 1)
    want = _batch(canonical(transactions, FRAUD_COLUMNS)).tail(day.height).select(NAMES).to_numpy()
    assert len(online) == day.height > 100
    _assert_same(np.vstack(online), want)


def test_one_batch_of_days_counts_its_own_earlier_rows_in_terminal_windows(
    redis_url: str, fraud_split: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    history = canonical(fraud_split[0], FRAUD_COLUMNS).sort("time", maintain_order=True)
    got = _state(redis_url).authorize_batch(
        [str(t) for t in history["transaction_id"].to_list()],
        history["card"].to_list(),
        history["terminal"].to_list(),
        history["amount"].to_list(),
        history["time"].to_list(),
    )
    # No label was reported during the batch, so compare with the kernels over the same rows unlabelled.
    want = _batch(history.with_columns(pl.lit(None, dtype=pl.Int8).alias("label"))).select(NAMES).to_numpy()
    assert got[:, NAMES.index("terminal_count_30d")].max() > 0
    _assert_same(got, want)


def test_two_servers_scoring_one_card_at_once_lose_no_update(redis_url: str) -> None:
    a, b = _state(redis_url), _state(redis_url)
    n = 40

    def score(i: int) -> None:
        (a, b)[i % 2].authorize(f"race-{i}", "hot-card", "t1", float(i + 1), T0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(score, range(n)))
    probe = a.authorize("race-probe", "hot-card", "t1", 1.0, T0 + 1)
    assert probe[COUNT_1H] == n + 1
    assert probe[SUM_1H] == n * (n + 1) / 2 + 1


def test_a_bad_batch_records_nothing(redis_url: str) -> None:
    state = _state(redis_url)
    state.authorize("seen", "c1", "t1", 5.0, T0)
    with pytest.raises(InvalidInputError, match="already scored"):
        state.authorize_batch(["fresh", "seen"], ["c1", "c1"], ["t1", "t1"], [7.0, 9.0], [T0 + 1, T0 + 2])
    with pytest.raises(InvalidInputError, match="earlier than this card"):
        state.authorize_batch(["fresh"], ["c1"], ["t1"], [7.0], [T0 - 1])
    with pytest.raises(InvalidInputError, match="finite"):
        state.authorize_batch(["fresh"], ["c1"], ["t1"], [float("nan")], [T0 + 1])
    out = state.authorize("fresh", "c1", "t1", 7.0, T0 + 1)  # "fresh" was never recorded
    assert out[COUNT_1H] == 2 and out[SUM_1H] == 12.0


def test_labels_reported_through_one_server_reach_the_other(redis_url: str) -> None:
    a, b = _state(redis_url), _state(redis_url)
    a.authorize("lab-1", "c1", "shop", 5.0, T0)
    with pytest.raises(InvalidInputError, match="names no authorization"):
        b.check_labels(["never-scored"], [1])
    b.report("lab-1", 1)
    b.report("lab-1", 1)  # twice: nothing changes
    later = a.authorize("lab-2", "c2", "shop", 5.0, T0 + FRAUD_DELAY_US + 1)
    assert later[NAMES.index("terminal_risk_1d")] == 1.0
    a.report("lab-1", 0)  # withdrawn
    again = b.authorize("lab-3", "c3", "shop", 5.0, T0 + FRAUD_DELAY_US + 2)
    assert again[NAMES.index("terminal_risk_1d")] == 0.0


def test_redis_gives_the_same_features_as_the_process_state(redis_url: str) -> None:
    mine = FraudState(delay_us=FRAUD_DELAY_US, secret=SECRET)
    shared = _state(redis_url)
    rng = np.random.default_rng(0)
    for i in range(300):
        when = T0 + i * 600_000_000
        args = (f"x{i}", f"card-{rng.integers(5)}", f"t{rng.integers(3)}", round(float(rng.gamma(2, 30)), 2), when)
        np.testing.assert_array_equal(shared.authorize(*args), mine.authorize(*args))
        if rng.random() < 0.1:
            shared.report(f"x{i}", 1)
            mine.report(f"x{i}", 1)


def test_an_unreachable_redis_is_one_clear_sentence() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StateUnavailableError, match=rf"Redis at {url} does not answer: start Redis"):
        RedisFraudState.connect(url, delay_us=FRAUD_DELAY_US, secret=SECRET)
    with pytest.raises(StateUnavailableError, match="not a Redis URL"):
        RedisFraudState.connect("http://nowhere", delay_us=FRAUD_DELAY_US, secret=SECRET)
    port = free_port()
    with pytest.raises(StateUnavailableError) as info:  # a password never reaches a message (or a log)
        RedisFraudState.connect(f"redis://fraud:s3cret@127.0.0.1:{port}/0", delay_us=FRAUD_DELAY_US, secret=SECRET)
    assert "s3cret" not in str(info.value) and f"redis://fraud:***@127.0.0.1:{port}/0" in str(info.value)


def test_the_scorer_fills_an_empty_redis_once_and_keeps_what_it_scored(
    redis_url: str, fraud_trained: FraudTrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "fraud"
    shutil.copytree(fraud_trained.path.parent, model, ignore=shutil.ignore_patterns("state"))
    version = model / fraud_trained.path.name
    monkeypatch.setenv(ENV_VAR, redis_url)
    first = FraudScorer.load(version)
    assert isinstance(first.state, RedisFraudState)
    auth = {
        "transaction_id": np.array([b"keep-1"], dtype=object),
        "card_id": np.array([b"kept-card"], dtype=object),
        "terminal_id": np.array([b"t1"], dtype=object),
        "amount": np.array([10.0]),
        "timestamp": np.array([T0], dtype=np.int64),
    }
    first.score(auth)
    second = FraudScorer.load(version)  # a reload, or another server: not filled again, sees keep-1
    with pytest.raises(InvalidInputError, match="already scored"):
        second.score(auth)
    auth["transaction_id"] = np.array([b"keep-2"], dtype=object)
    auth["timestamp"] = np.array([T0 + 1], dtype=np.int64)
    assert second.score(auth)["features"][0, COUNT_1H] == 2
    assert first.snapshot() is None and not (model / "state").exists()  # Redis keeps it; no file written


def _names(state: RedisFraudState, card: str, terminal: str, txid: str) -> dict[str, str]:
    return {
        "card": state._key("card", card_key(card, SECRET)),
        "tx": state._key("tx", txid),
        "terminal": state._key("term", terminal + ":tx"),
        "frauds": state._key("term", terminal + ":fr"),
    }


def test_one_authorization_is_one_round_trip(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _state(redis_url)
    state.authorize("rt-0", "c1", "t1", 5.0, T0)  # loads the script
    sent: list[bytes] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def spy(conn: object, command: object, check_health: bool = True) -> None:
        # Every command redis-py or the state sends passes here, packed: "*<n>\r\n$<len>\r\n<name>\r\n...".
        sent.append(b"".join(command).split(b"\r\n")[2])  # type: ignore[arg-type]
        send(conn, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", spy)
    state.authorize_batch(["rt-1", "rt-2"], ["c1", "c2"], ["t1", "t2"], [6.0, 7.0], [T0 + 1, T0 + 2])
    state.report("rt-1", 1)
    assert sent == [b"EVALSHA", b"EVALSHA"]


def test_a_redis_that_forgot_the_scripts_is_sent_them_again(redis_url: str) -> None:
    state = _state(redis_url)
    state.authorize("ns-1", "c1", "t1", 5.0, T0)
    state.client.script_flush()  # as after a restart
    assert state.authorize("ns-2", "c1", "t1", 5.0, T0 + 1)[COUNT_1H] == 2
    state.client.script_flush()
    state.report("ns-2", 1)
    assert state.client.zcard(_names(state, "c1", "t1", "ns-2")["frauds"]) == 1


def test_a_connection_redis_cut_is_made_again(redis_url: str) -> None:
    state = _state(redis_url)
    state.authorize("cut-1", "c1", "t1", 5.0, T0)
    # As after a restart of Redis, or a dropped link: the kept connection is dead, the next call makes a new one.
    assert state.client.client_kill_filter(_type="normal", skipme=True) >= 1
    assert state.authorize("cut-2", "c1", "t1", 5.0, T0 + 1)[COUNT_1H] == 2
    state.client.client_kill_filter(_type="normal", skipme=True)
    state.report("cut-2", 1)
    assert state.client.zcard(_names(state, "c1", "t1", "cut-2")["frauds"]) == 1


def test_redis_keeps_the_card_histories_the_process_state_keeps(redis_url: str) -> None:
    mine = FraudState(delay_us=FRAUD_DELAY_US, secret=SECRET)
    shared = _state(redis_url)
    rng = np.random.default_rng(1)
    for step in range(40):  # batches with a card several times, over 80 days: histories grow and are trimmed
        rows = [
            (f"h{step}-{j}", f"card-{rng.integers(3)}", f"t{rng.integers(2)}", float(rng.gamma(2, 30)))
            for j in range(5)
        ]
        when = [T0 + step * 2 * 86_400_000_000 + j for j in range(5)]
        args = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], when)
        np.testing.assert_array_equal(shared.authorize_batch(*args), mine.authorize_batch(*args))
    for key, card in mine.cards.items():
        assert shared.client.get(shared._key("card", key)) == _pack(card)


def test_keys_live_as_long_as_the_label_delay_and_the_longest_window(redis_url: str) -> None:
    state = _state(redis_url)
    assert state.ttl_ms == default_ttl_ms(FRAUD_DELAY_US) == (FRAUD_DELAY_US + 31 * 86_400_000_000) // 1000
    # Times from long ago, as a replay sends: the expiry counts from the write, not from the data's clock.
    state.authorize("ttl-1", "c1", "shop", 5.0, T0 - 10 * 365 * 86_400_000_000)
    state.report("ttl-1", 1)
    names = _names(state, "c1", "shop", "ttl-1")
    for name in names.values():
        assert state.ttl_ms - 60_000 < state.client.pttl(name) <= state.ttl_ms, name
    forever = RedisFraudState(state.client, delay_us=FRAUD_DELAY_US, secret=SECRET, ttl_ms=0)
    forever.authorize("ttl-2", "c2", "shop2", 5.0, T0)
    forever.report("ttl-2", 1)
    assert [forever.client.pttl(n) for n in _names(forever, "c2", "shop2", "ttl-2").values()] == [-1] * 4


def test_an_idle_card_and_terminal_expire_an_active_one_does_not(redis_url: str) -> None:
    state = RedisFraudState.connect(redis_url, delay_us=FRAUD_DELAY_US, secret=SECRET, ttl_ms=400)
    state.authorize("idle-1", "idle", "t-idle", 5.0, T0)
    state.authorize("busy-0", "busy", "t-busy", 5.0, T0)
    for i in range(1, 5):  # written every 0.15 s: each write sets the expiry again
        time.sleep(0.15)
        state.authorize(f"busy-{i}", "busy", "t-busy", 5.0, T0 + i)
    idle, busy = _names(state, "idle", "t-idle", "idle-1"), _names(state, "busy", "t-busy", "busy-4")
    assert state.client.exists(idle["card"], idle["tx"], idle["terminal"]) == 0
    assert state.client.exists(busy["card"], busy["tx"], busy["terminal"]) == 3
    again = state.authorize("idle-2", "idle", "t-idle", 5.0, T0 + 1)  # the idle card comes back new
    assert again[COUNT_1H] == 1 and np.isnan(again[NAMES.index("seconds_since_previous")])
    with pytest.raises(ValueError, match="time to live"):
        RedisFraudState(state.client, delay_us=FRAUD_DELAY_US, secret=SECRET, ttl_ms=-1)
