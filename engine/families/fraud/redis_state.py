"""The fraud state in Redis, shared by several Triton instances or servers.

:class:`RedisFraudState` answers like :class:`engine.families.fraud.state.FraudState` (same features, same errors) with
its data in one Redis database, so any number of servers can score the same cards. Set
``FINSCORE_FRAUD_REDIS=redis://HOST:PORT/DB`` (``finscore serve --fraud-redis URL`` does) before the model
loads; without it the state lives in the model's process.

Keys, under ``finscore:fraud:<namespace>:`` (the namespace is a keyed digest of the label delay, so a model
trained with another delay or another card key never reads this one's data)::

    card:<card key>     the card's history, packed: running totals, then times, sums before and amounts
    term:<terminal>:tx  sorted set, member per transaction, score its time (µs)
    term:<terminal>:fr  sorted set of the transactions reported as fraud
    tx:<transaction>    "terminal \\x1f time \\x1f label", expiring once no window can read its label
    ready               set once the namespace holds the version's starting state

A batch of authorizations is one optimistic transaction: WATCH the batch's cards and transaction ids, read
them, compute every row in order (each seeing the rows before it), then MULTI/EXEC the writes; if another
server changed one of those cards meanwhile, EXEC fails and the batch is read again. So two servers never
lose each other's update of a card, and a bad request writes nothing. Terminal windows end the label delay
before the transaction, so they are read outside the WATCH: what arrives meanwhile cannot fall in them.
Card ids never reach Redis, only their keyed digests. Redis keeps the state across restarts with its own
persistence (RDB or AOF, as its operator configures); snapshots to a file are not taken in this mode.
"""

from __future__ import annotations

import hashlib
import struct
import time as _time
from bisect import bisect_right, insort
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from engine.errors import InvalidInputError, StateUnavailableError
from engine.families.fraud.state import (
    _N_FEATURES,
    _SCORED_TWICE,
    _TERMINAL_SPAN,
    _UNKNOWN_TX,
    FraudState,
    _Card,
    _check_order,
    card_key,
    check_amount,
    check_label,
    features,
)
from engine.settings import env_name
from kernels.transactions import DAY_US, TERMINAL_WINDOWS

__all__ = ["ENV_VAR", "RedisFraudState", "StateUnavailableError", "redacted_url"]

ENV_VAR = env_name("fraud_redis")
_HEADER = struct.Struct("<ddqqq")  # total, squares, count, last, n kept
_SEP = "\x1f"
_RETRIES = 50
_SEED_CHUNK = 5000


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages, printed lines and the audit log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _pack(c: _Card) -> bytes:
    n = len(c.times)
    head = _HEADER.pack(c.total, c.squares, c.count, -1 if c.last is None else c.last, n)
    return (
        head
        + np.asarray(c.times, dtype="<i8").tobytes()
        + np.asarray(c.before, dtype="<f8").tobytes()
        + np.asarray(c.amounts, dtype="<f8").tobytes()
    )


def _unpack(blob: bytes | None) -> _Card:
    if blob is None:
        return _Card()
    total, squares, count, last, n = _HEADER.unpack_from(blob)
    o = _HEADER.size
    times = np.frombuffer(blob, dtype="<i8", count=n, offset=o).tolist()
    before = np.frombuffer(blob, dtype="<f8", count=n, offset=o + 8 * n).tolist()
    amounts = np.frombuffer(blob, dtype="<f8", count=n, offset=o + 16 * n).tolist()
    return _Card(times, before, amounts, total, squares, count, None if last < 0 else last)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisFraudState:
    """Card and terminal histories in Redis; the interface of :class:`FraudState`."""

    def __init__(self, client: Any, *, delay_us: int, secret: bytes, url: str = "redis") -> None:
        self.client = client
        self.delay_us = int(delay_us)
        self.secret = secret
        self.url = redacted_url(url)  # for messages only: the client holds the real one
        space = hashlib.blake2b(str(self.delay_us).encode(), key=secret, digest_size=8).hexdigest()
        self.prefix = f"finscore:fraud:{space}:"
        # A transaction's label matters until no terminal window can reach it: the delay plus the longest window
        # (a day more for clocks). Redis counts the expiry in wall-clock time, event times are close to it.
        self.label_ttl_ms = (self.delay_us + _TERMINAL_SPAN + DAY_US) // 1000

    @classmethod
    def connect(
        cls, url: str, *, delay_us: int, secret: bytes, seed: Callable[[], FraudState] | None = None
    ) -> RedisFraudState:
        """Connect to ``url``; if its namespace is empty, fill it from ``seed()`` (one server does, the others
        wait for it)."""
        import redis

        try:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        except ValueError as exc:
            msg = f"{ENV_VAR}={redacted_url(url)!r} is not a Redis URL such as redis://127.0.0.1:6379/0 ({exc})"
            raise StateUnavailableError(msg) from None
        state = cls(client, delay_us=delay_us, secret=secret, url=url)
        with state._reachable():
            client.ping()
            if seed is not None:
                state._seed_once(seed)
        return state

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            del exc  # its text names sockets and errno, which a client could take for Triton's own
            msg = f"the fraud state in Redis at {self.url} does not answer: start Redis or check {ENV_VAR}"
            raise StateUnavailableError(msg) from None

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    # -- starting state ----------------------------------------------------------------------------------------
    def _seed_once(self, seed: Callable[[], FraudState], timeout: float = 300.0) -> None:
        ready = self.prefix + "ready"
        if self.client.get(ready) == b"1":
            return
        if self.client.set(ready, b"seeding", nx=True, ex=int(timeout)):
            self.load(seed())
            self.client.set(ready, b"1")
            return
        deadline = _time.monotonic() + timeout
        while self.client.get(ready) != b"1":
            if _time.monotonic() > deadline:
                msg = f"another server has been filling the fraud state in Redis at {self.url} for {timeout:.0f} s"
                raise StateUnavailableError(msg)
            _time.sleep(0.2)

    def load(self, state: FraudState) -> None:
        """Write an in-process state (a version's starting state, or a snapshot) into this namespace."""
        pipe = self.client.pipeline(transaction=False)
        pending = 0

        def flush(force: bool = False) -> None:
            nonlocal pending
            if pending >= _SEED_CHUNK or (force and pending):
                pipe.execute()
                pending = 0

        for key, c in state.cards.items():
            pipe.set(self._key("card", key), _pack(c))
            pending += 1
            flush()
        for terminal, t in state.terminals.items():
            if t.times:
                # Seeded transactions are members "s<i>"; live ones "t<id>": the two never collide.
                pipe.zadd(self._key("term", terminal + ":tx"), {f"s{i}": v for i, v in enumerate(t.times)})
                pending += 1
                flush()
        for txid, (terminal, when, label) in state.labels.items():
            pipe.set(self._key("tx", txid), f"{terminal}{_SEP}{when}{_SEP}{label}", px=self.label_ttl_ms)
            if label:
                pipe.zadd(self._key("term", terminal + ":fr"), {f"t{txid}": when})
            pending += 1
            flush()
        flush(force=True)

    # -- authorizations ----------------------------------------------------------------------------------------
    def check(self, transaction_ids: list[str], cards: list[str], times: list[int]) -> None:
        """What a batch can be checked for without reading Redis: ids repeated and time order within it (the
        rest is checked, atomically, by :meth:`authorize_batch`)."""
        if len(set(transaction_ids)) < len(transaction_ids):
            raise InvalidInputError(_SCORED_TWICE)
        last: dict[str, int] = {}
        for card, when in zip(cards, times, strict=True):
            _check_order(last.get(card), when)
            last[card] = when

    def authorize(self, transaction_id: str, card: str, terminal: str, amount: float, time: int) -> np.ndarray:
        return self.authorize_batch([transaction_id], [card], [terminal], [amount], [time])[0]

    def authorize_batch(
        self, transaction_ids: list[str], cards: list[str], terminals: list[str], amounts: list[float], times: list[int]
    ) -> np.ndarray:
        """The features of each authorization in order, each seeing the ones before it; then all are recorded,
        in one transaction. Raises :class:`InvalidInputError` (and records nothing) if any row is bad."""
        import redis

        if not transaction_ids:
            return np.empty((0, _N_FEATURES))
        for amount in amounts:
            check_amount(amount)
        self.check(transaction_ids, cards, times)
        keys = [card_key(c, self.secret) for c in cards]
        card_keys = list(dict.fromkeys(self._key("card", k) for k in keys))
        tx_keys = [self._key("tx", t) for t in transaction_ids]
        with self._reachable():
            for _ in range(_RETRIES):
                with self.client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(*card_keys, *tx_keys)
                        found = pipe.mget(*card_keys, *tx_keys)
                        if any(v is not None for v in found[len(card_keys) :]):
                            raise InvalidInputError(_SCORED_TWICE)
                        state = dict(zip(card_keys, map(_unpack, found[: len(card_keys)]), strict=True))
                        counts = self._terminal_counts(terminals, times)
                        rows = []
                        added: dict[str, list[int]] = {}
                        for i, key in enumerate(keys):
                            c = state[self._key("card", key)]
                            _check_order(c.last, times[i])
                            extra = self._pending_counts(added.get(terminals[i], []), times[i])
                            windows = [(n + e, f) for (n, f), e in zip(counts[i], extra, strict=True)]
                            rows.append(features(c, amounts[i], times[i], windows))
                            c.record(amounts[i], times[i])
                            insort(added.setdefault(terminals[i], []), times[i])
                        pipe.multi()
                        for name, c in state.items():
                            pipe.set(name, _pack(c))  # no expiry: the z-score reads a card's whole history
                        for txid, terminal, when in zip(transaction_ids, terminals, times, strict=True):
                            pipe.set(self._key("tx", txid), f"{terminal}{_SEP}{when}{_SEP}0", px=self.label_ttl_ms)
                            pipe.zadd(self._key("term", terminal + ":tx"), {f"t{txid}": when})
                        for terminal, stamps in added.items():
                            horizon = stamps[-1] - self.delay_us - _TERMINAL_SPAN
                            pipe.zremrangebyscore(self._key("term", terminal + ":tx"), "-inf", horizon)
                            pipe.zremrangebyscore(self._key("term", terminal + ":fr"), "-inf", horizon)
                        pipe.execute()
                        return np.vstack(rows)
                    except redis.WatchError:
                        continue
        msg = "the fraud state in Redis kept changing under this request (the same cards scored elsewhere); retry it"
        raise StateUnavailableError(msg)

    def _terminal_counts(self, terminals: list[str], times: list[int]) -> list[list[tuple[int, int]]]:
        """(transactions, frauds) per terminal window for each row, as Redis holds them now."""
        pipe = self.client.pipeline(transaction=False)
        for terminal, when in zip(terminals, times, strict=True):
            end = when - self.delay_us
            for size in TERMINAL_WINDOWS.values():
                pipe.zcount(self._key("term", terminal + ":tx"), f"({end - size}", end)
                pipe.zcount(self._key("term", terminal + ":fr"), f"({end - size}", end)
        flat = pipe.execute()
        w = 2 * len(TERMINAL_WINDOWS)
        return [list(zip(flat[i : i + w : 2], flat[i + 1 : i + w : 2], strict=True)) for i in range(0, len(flat), w)]

    def _pending_counts(self, stamps: list[int], time: int) -> list[int]:
        """Transactions of this batch, already read, that fall in each terminal window of a later row."""
        if not stamps:
            return [0] * len(TERMINAL_WINDOWS)
        end = bisect_right(stamps, time - self.delay_us)
        return [end - bisect_right(stamps, time - self.delay_us - size) for size in TERMINAL_WINDOWS.values()]

    # -- labels arriving late ----------------------------------------------------------------------------------
    def check_labels(self, transaction_ids: list[str], labels: list[int]) -> None:
        for label in labels:
            check_label(label)
        if not transaction_ids:
            return
        with self._reachable():
            found = self.client.mget([self._key("tx", t) for t in transaction_ids])
        if any(v is None for v in found):
            raise InvalidInputError(_UNKNOWN_TX)

    def report(self, transaction_id: str, label: int) -> None:
        """Record the fraud label (1) or its withdrawal (0) of an authorization scored earlier."""
        import redis

        check_label(label)
        name = self._key("tx", transaction_id)
        with self._reachable(), self.client.pipeline(transaction=True) as pipe:
            for _ in range(_RETRIES):
                try:
                    pipe.watch(name)
                    known = pipe.get(name)
                    if known is None:
                        raise InvalidInputError(_UNKNOWN_TX)
                    terminal, when, old = _text(known).split(_SEP)
                    if int(old) == label:
                        pipe.unwatch()
                        return  # reported twice: nothing changes
                    frauds = self._key("term", terminal + ":fr")
                    pipe.multi()
                    if label:
                        pipe.zadd(frauds, {f"t{transaction_id}": int(when)})
                    else:
                        pipe.zrem(frauds, f"t{transaction_id}")
                    pipe.set(name, f"{terminal}{_SEP}{when}{_SEP}{label}", keepttl=True)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        msg = "the label kept changing under this report in Redis; retry it"
        raise StateUnavailableError(msg)

    # -- erasure ----------------------------------------------------------------------------------------------
    def forget(self, cards: Sequence[str]) -> list[bool]:
        """Erase these cards' histories (a GDPR erasure): True for each card that was held. One key per card;
        a batch of authorizations watching it meanwhile is read again and finds the card new."""
        if not cards:
            return []
        names = [self._key("card", card_key(card, self.secret)) for card in cards]
        with self._reachable(), self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.delete(name)
            return [bool(n) for n in pipe.execute()]

    def prune_labels(self, now: int) -> None:
        """Nothing to do: Redis expires labels and trims terminal windows as it writes."""
        del now

    def snapshot(self, path: object) -> None:
        """Nothing to write: the state lives in Redis, which persists it as its operator configured."""
        del path
