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
    tx:<transaction>    "terminal \\x1f time \\x1f label": its terminal and time, for a label reported later
    ready               set once the namespace holds the version's starting state

One round trip per request. A batch of authorizations is one Lua script
(:data:`engine.families.fraud.redis_scripts.AUTHORIZE`, sent by digest): inside Redis, atomically, it checks
the transaction ids and the cards' time order, counts every row's terminal windows, records the rows and
answers the cards' histories as they were with the counts; Python then computes the features from those,
with the very function :class:`FraudState` uses. It replaced an optimistic transaction (WATCH, read the cards,
read the terminal windows, MULTI/EXEC: four round trips, more when another server changed a card meanwhile).
Computing the features in Lua as well would save no round trip and would write the feature arithmetic a
second time; what Lua does compute is the card update, in additions only, which round the same in Lua and in
Python. Atomicity keeps the rest of the old guarantees: two servers never lose each other's update of a card,
rows see the batch's earlier rows, and a bad request (an id already scored, a card going back in time)
writes nothing, as the script checks the whole batch before it writes. A label report is one script too;
an erasure one MULTI/EXEC.

Expiry. Every key written gets a time to live of ``ttl_ms``, set again on every write, by default the label
delay plus the longest window plus a day's margin. Redis counts it in wall-clock time, while windows count
in the transactions' own times (which a replay may take from years ago), so the rule relies only on this:
between two writes of a key, the data's clock moves no slower than the wall clock (true when serving live,
and in a replay, which goes faster). Then a key that has not been written for ``ttl_ms`` holds only
transactions that no window can reach from the next authorization: an active card or terminal never
expires, an idle one goes after ``ttl_ms``. One thing does reach further than any window: a card's running
totals, which its z-score and its seconds since the previous authorization read. A card idle longer than
``ttl_ms`` comes back as a new card, as after an erasure (:class:`FraudState`, in one process, keeps it
for ever); pass ``ttl_ms=0`` to keep every key for ever.

Card ids never reach Redis, only their keyed digests. Redis keeps the state across restarts with its own
persistence (RDB or AOF, as its operator configures); snapshots to a file are not taken in this mode.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time as _time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from engine.errors import InvalidInputError, StateUnavailableError
from engine.families.fraud.redis_scripts import AUTHORIZE, REPORT
from engine.families.fraud.state import (
    _CARD_SPAN,
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
    feature_row,
)
from engine.settings import env_name
from kernels.transactions import DAY_US, TERMINAL_WINDOWS

__all__ = ["ENV_VAR", "RedisFraudState", "StateUnavailableError", "default_ttl_ms", "redacted_url"]


def _hiredis_packer() -> Callable[[tuple[Any, ...]], bytes] | None:
    """redis[hiredis]'s command packer, in C (without hiredis, a bare redis-py works: it packs in Python)."""
    try:
        import hiredis
    except ImportError:  # pragma: no cover - hiredis is a dependency
        return None
    return hiredis.pack_command  # type: ignore[no-any-return]


_PACK = _hiredis_packer()

ENV_VAR = env_name("fraud_redis")
_HEADER = struct.Struct("<ddqqq")  # total, squares, count, last, n kept
_DOUBLE = struct.Struct("<d")
_TIME = struct.Struct("<q")
_SEP = "\x1f"
_SEED_CHUNK = 5000
_WINDOWS = list(TERMINAL_WINDOWS.values())
_N_COUNTS = 2 * len(TERMINAL_WINDOWS)


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages, printed lines and the audit log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def default_ttl_ms(delay_us: int) -> int:
    """How long a key lives after its last write: the label delay, the longest window and a day's margin."""
    return (int(delay_us) + max(_CARD_SPAN, _TERMINAL_SPAN) + DAY_US) // 1000


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
    values = struct.unpack_from(f"<{n}q{2 * n}d", blob, _HEADER.size)
    times, before, amounts = list(values[:n]), list(values[n : 2 * n]), list(values[2 * n :])
    return _Card(times, before, amounts, total, squares, count, None if last < 0 else last)


def _digest(script: str) -> str:
    """The name Redis keeps a script under (EVALSHA's argument)."""
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis's own naming, not a protection


_DIGESTS = {script: _digest(script) for script in (AUTHORIZE, REPORT)}


def _round_trip(conn: Any, command: tuple[Any, ...]) -> Any:
    """Send one command on ``conn`` and read its answer (a Redis error answer is raised)."""
    packed = [_PACK(command)] if _PACK is not None else conn.pack_command(*command)
    conn.send_packed_command(packed, check_health=False)
    return conn.read_response()


def _evaluated(conn: Any, script: str, command: tuple[Any, ...]) -> Any:
    """``command`` (an EVALSHA of ``script``) on ``conn``; sent again as EVAL, with the text, when Redis does not
    hold the script (it keeps it from then on)."""
    import redis

    try:
        return _round_trip(conn, command)
    except redis.exceptions.NoScriptError:
        return _round_trip(conn, ("EVAL", script, *command[2:]))


class RedisFraudState:
    """Card and terminal histories in Redis; the interface of :class:`FraudState`.

    ``ttl_ms`` is how long a key lives after its last write (default :func:`default_ttl_ms`; 0: for ever).
    """

    def __init__(
        self, client: Any, *, delay_us: int, secret: bytes, url: str = "redis", ttl_ms: int | None = None
    ) -> None:
        self.client = client
        self.delay_us = int(delay_us)
        self.secret = secret
        self.url = redacted_url(url)  # for messages only: the client holds the real one
        space = hashlib.blake2b(str(self.delay_us).encode(), key=secret, digest_size=8).hexdigest()
        self.prefix = f"finscore:fraud:{space}:"
        self.ttl_ms = default_ttl_ms(self.delay_us) if ttl_ms is None else int(ttl_ms)
        if self.ttl_ms < 0:
            msg = f"the Redis keys' time to live must be 0 (no expiry) or more milliseconds, got {self.ttl_ms}"
            raise ValueError(msg)
        # The scripts are sent by digest (EVALSHA) on a connection of each thread's own, outside redis-py's
        # command path: packing, the pool and its bookkeeping cost 60-130 µs an authorization here, the round
        # trip itself 40.
        self._local = threading.local()

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        delay_us: int,
        secret: bytes,
        seed: Callable[[], FraudState] | None = None,
        ttl_ms: int | None = None,
    ) -> RedisFraudState:
        """Connect to ``url``; if its namespace is empty, fill it from ``seed()`` (one server does, the others
        wait for it)."""
        import redis

        try:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        except ValueError as exc:
            msg = f"{ENV_VAR}={redacted_url(url)!r} is not a Redis URL such as redis://127.0.0.1:6379/0 ({exc})"
            raise StateUnavailableError(msg) from None
        state = cls(client, delay_us=delay_us, secret=secret, url=url, ttl_ms=ttl_ms)
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

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` in Redis: one round trip (a second, with its text, when Redis answers NOSCRIPT after a
        restart or a flush). A connection kept from an earlier call that turns out cut (Redis restarted, the link
        dropped) is made again and the call sent once more; had the script run before the cut, the resend finds
        its ids scored and says so. Raises :class:`StateUnavailableError` when Redis does not answer."""
        import redis

        conn = getattr(self._local, "conn", None)
        kept = conn is not None
        if conn is None:
            conn = self._local.conn = self.client.connection_pool.make_connection()
        command = ("EVALSHA", _DIGESTS[script], len(keys), *keys, *args)
        with self._reachable():
            try:
                return _evaluated(conn, script, command)
            except redis.ConnectionError:
                if not kept:
                    raise
                conn.disconnect()
                return _evaluated(conn, script, command)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    @property
    def _px(self) -> int | None:
        return self.ttl_ms or None

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
        """Write an in-process state (a version's starting state, or a snapshot) into this namespace; each key
        expires as if written by an authorization now."""
        pipe = self.client.pipeline(transaction=False)
        pending = 0

        def flush(force: bool = False) -> None:
            nonlocal pending
            if pending >= _SEED_CHUNK or (force and pending):
                pipe.execute()
                pending = 0

        def expire(name: str) -> None:
            if self.ttl_ms:
                pipe.pexpire(name, self.ttl_ms)

        for key, c in state.cards.items():
            pipe.set(self._key("card", key), _pack(c), px=self._px)
            pending += 1
            flush()
        for terminal, t in state.terminals.items():
            if t.times:
                # Seeded transactions are members "s<i>"; live ones "t<id>": the two never collide.
                name = self._key("term", terminal + ":tx")
                pipe.zadd(name, {f"s{i}": v for i, v in enumerate(t.times)})
                expire(name)
                pending += 1
                flush()
        for txid, (terminal, when, label) in state.labels.items():
            pipe.set(self._key("tx", txid), f"{terminal}{_SEP}{when}{_SEP}{label}", px=self._px)
            if label:
                name = self._key("term", terminal + ":fr")
                pipe.zadd(name, {f"t{txid}": when})
                expire(name)
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
        in one script run by Redis. Raises :class:`InvalidInputError` (and records nothing) if any row is bad."""
        n = len(transaction_ids)
        if not n:
            return np.empty((0, _N_FEATURES))
        for amount in amounts:
            check_amount(amount)
        if n > 1:  # one row has no other to repeat its id or to go back in time from
            self.check(transaction_ids, cards, times)
        keys = [card_key(c, self.secret) for c in cards]
        card_index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        term_index = {t: i for i, t in enumerate(dict.fromkeys(terminals))}
        p = self.prefix
        names = [
            *(f"{p}card:{k}" for k in card_index),
            *(f"{p}tx:{t}" for t in transaction_ids),
            *(f"{p}term:{t}:tx" for t in term_index),
            *(f"{p}term:{t}:fr" for t in term_index),
        ]
        args: list[Any] = [len(card_index), n, len(term_index), _CARD_SPAN, self.ttl_ms, len(_WINDOWS)]
        for txid, key, terminal, amount, when in zip(transaction_ids, keys, terminals, amounts, times, strict=True):
            stop = when - self.delay_us  # terminal windows end the label delay before the transaction
            args += [
                card_index[key] + 1,
                term_index[terminal] + 1,
                f"t{txid}",
                when,
                _TIME.pack(when),
                _DOUBLE.pack(amount),
                _DOUBLE.pack(amount**2),  # squared here, as _Card.record does: the script only adds
                f"{terminal}{_SEP}{when}{_SEP}0",
                stop,
                *[f"({stop - size}" for size in _WINDOWS],
                stop - _TERMINAL_SPAN,  # what no window reaches any more
            ]
        reply = self._run(AUTHORIZE, names, args)
        if reply[0] == b"scored":
            raise InvalidInputError(_SCORED_TWICE)
        if reply[0] == b"order":
            _check_order(int(reply[2]), times[int(reply[1])])
        state = [_unpack(blob) for blob in reply[1]]
        counts = reply[2]
        # The script recorded every row; Python replays a row on its copy of the card only for a later row of the
        # same card in this batch.
        left = Counter(keys) if len(card_index) < n else None
        rows = []
        for i, key in enumerate(keys):
            c = state[card_index[key]]
            flat = counts[i * _N_COUNTS : (i + 1) * _N_COUNTS]
            rows.append(feature_row(c, amounts[i], times[i], list(zip(flat[::2], flat[1::2], strict=True))))
            if left is not None and left[key] > 1:
                left[key] -= 1
                c.record(amounts[i], times[i])
        return np.array(rows, dtype=np.float64)

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
        check_label(label)
        done = self._run(
            REPORT,
            [self._key("tx", transaction_id)],
            [self.prefix + "term:", f"t{transaction_id}", label, self.ttl_ms],
        )
        if done == b"unknown":
            raise InvalidInputError(_UNKNOWN_TX)

    # -- erasure ----------------------------------------------------------------------------------------------
    def forget(self, cards: Sequence[str]) -> list[bool]:
        """Erase these cards' histories (a GDPR erasure): True for each card that was held. One key per card;
        an authorization of the card after it finds the card new."""
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
