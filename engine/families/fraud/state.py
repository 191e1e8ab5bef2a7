"""What the server remembers per card and terminal, and the features of one authorization from it.

:class:`FraudState` keeps, per card, the transactions of the longest card window plus running totals, and per
terminal the times of its transactions and of those reported as fraud over the label delay plus the longest
terminal window. :meth:`FraudState.authorize` computes one authorization's features with the very arithmetic
of :func:`kernels.transactions.transaction_features` (running sums, differences of running sums, the same
window bounds), then records it. The parity tests replay a day through it and compare with the kernels.

Cards are kept under a keyed BLAKE2b digest (the key lives with the model version), so neither memory dumps
nor snapshots hold a card number. Snapshots are gzip-compressed JSON written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from bisect import bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InvalidInputError, ModelNotReadyError
from kernels.transactions import CARD_WINDOWS, DAY_US, HOUR_US, TERMINAL_WINDOWS, feature_names

__all__ = ["FraudState", "card_key", "check_amount", "check_label", "feature_row"]

SNAPSHOT_VERSION = 1
_CARD_SPAN = max(CARD_WINDOWS.values())
_TERMINAL_SPAN = max(TERMINAL_WINDOWS.values())
_N_FEATURES = len(feature_names())


def card_key(card: str, secret: bytes) -> str:
    """The key a card is kept under: a keyed BLAKE2b digest of its id (hex, 32 characters)."""
    return hashlib.blake2b(card.encode("utf-8"), key=secret, digest_size=16).hexdigest()


_UNKNOWN_TX = "input 'transaction_id' names no authorization this server still holds (never scored, or too old)"
_SCORED_TWICE = "input 'transaction_id' was already scored; each authorization is scored once"


def _check_order(last: int | None, time: int) -> None:
    if last is not None and time < last:
        msg = (
            f"input 'timestamp' is {(last - time) / 1e6:.3f} s earlier than this card's previous authorization; "
            "send a card's authorizations in time order"
        )
        raise InvalidInputError(msg)


def check_amount(amount: float) -> None:
    if not math.isfinite(amount):
        msg = "input 'amount' must be a finite number"
        raise InvalidInputError(msg)


def check_label(label: int) -> None:
    if label not in (0, 1):
        msg = f"input 'label' must be 0 or 1, got {label}"
        raise InvalidInputError(msg)


@dataclass
class _Card:
    times: list[int] = field(default_factory=list)  # transactions within the longest window, oldest first
    before: list[float] = field(default_factory=list)  # running sum of amounts before each of them
    amounts: list[float] = field(default_factory=list)
    total: float = 0.0  # running sum of every amount
    squares: float = 0.0  # running sum of every amount squared
    count: int = 0
    last: int | None = None

    def record(self, amount: float, time: int) -> _Card:
        """Remember a transaction (after its features were read) and forget what left the longest window."""
        # The kernel's arithmetic: running sums include the amount, "before" is the running sum less it.
        cs = self.total + amount
        self.times.append(time)
        self.before.append(cs - amount)
        self.amounts.append(amount)
        self.total = cs
        self.squares += amount**2
        self.count += 1
        self.last = time
        drop = bisect_right(self.times, time - _CARD_SPAN)
        if drop:
            del self.times[:drop], self.before[:drop], self.amounts[:drop]
        return self


@dataclass
class _Terminal:
    times: list[int] = field(default_factory=list)  # sorted
    frauds: list[int] = field(default_factory=list)  # times of transactions reported as fraud, sorted

    def record(self, time: int, delay_us: int) -> _Terminal:
        """Remember a transaction's time and forget what no window can read any more."""
        if not self.times or time >= self.times[-1]:
            self.times.append(time)
        else:
            insort(self.times, time)
        horizon = time - delay_us - _TERMINAL_SPAN
        drop = bisect_right(self.times, horizon)
        if drop:
            del self.times[:drop]
            del self.frauds[: bisect_right(self.frauds, horizon)]
        return self


def feature_row(c: _Card, amount: float, time: int, terminal: list[tuple[int, int]]) -> list[float]:
    """One authorization's features (:func:`feature_names` order) from its card's history and its terminal's
    (transactions, frauds) per window: the arithmetic of :func:`kernels.transactions.transaction_features` (running
    sums, differences of running sums, the same window bounds). Every state computes features here, as a list: a
    batch makes one array of its rows (a slice assignment per window, or an array per row, costs a microsecond or
    two)."""
    out: list[float] = [amount, (time // HOUR_US) % 24, (time // DAY_US + 3) % 7]
    cs = c.total + amount
    before = cs - amount  # not c.total: the kernel's arithmetic, rounding included
    times, kept = c.times, len(c.times)
    for size in CARD_WINDOWS.values():
        first = bisect_right(times, time - size)
        count = kept - first + 1
        total = cs - (c.before[first] if first < kept else before)
        out += (count, total, total / count, max(amount, *c.amounts[first:]) if first < kept else amount)
    out.append((time - c.last) / 1e6 if c.last is not None else math.nan)
    n = float(c.count)
    zscore = math.nan
    if n >= 2:
        sq_before = (c.squares + amount**2) - amount**2
        var = (sq_before - before * before / n) / (n - 1)
        if var > 0:
            zscore = (amount - before / n) / math.sqrt(var)
    out.append(zscore)
    for count, frauds in terminal:
        out += (count, frauds / count if count > 0 else 0.0)
    return out


class FraudState:
    """Card and terminal histories for online features, held by one process."""

    def __init__(self, *, delay_us: int, secret: bytes) -> None:
        self.delay_us = int(delay_us)
        self.secret = secret
        self.cards: dict[str, _Card] = {}
        self.terminals: dict[str, _Terminal] = {}
        self.labels: dict[str, tuple[str, int, int]] = {}  # transaction id → (terminal, time, label)

    def check(self, transaction_ids: list[str], cards: list[str], times: list[int]) -> None:
        """Raise :class:`InvalidInputError` if any row of this batch could not be recorded (checked before
        any row is, so a bad request leaves the state as it was)."""
        self._checked_keys(transaction_ids, cards, times)

    def _checked_keys(self, transaction_ids: list[str], cards: list[str], times: list[int]) -> list[str]:
        """:meth:`check`, answering the rows' card keys."""
        seen: set[str] = set()
        last: dict[str, int | None] = {}
        keys = []
        for txid, card, time in zip(transaction_ids, cards, times, strict=True):
            if txid in self.labels or txid in seen:
                raise InvalidInputError(_SCORED_TWICE)
            seen.add(txid)
            key = card_key(card, self.secret)
            if key not in last:
                c = self.cards.get(key)
                last[key] = c.last if c is not None else None
            _check_order(last[key], time)
            last[key] = time
            keys.append(key)
        return keys

    # -- one authorization -------------------------------------------------------------------------------
    def authorize(self, transaction_id: str, card: str, terminal: str, amount: float, time: int) -> np.ndarray:
        """The features of this authorization (float64, :func:`feature_names` order); then remember it."""
        check_amount(amount)
        key = card_key(card, self.secret)
        c = self.cards.get(key)
        _check_order(c.last if c is not None else None, time)
        if transaction_id in self.labels:
            raise InvalidInputError(_SCORED_TWICE)
        return np.array(self._record(transaction_id, key, terminal, amount, time), dtype=np.float64)

    def _record(self, transaction_id: str, key: str, terminal: str, amount: float, time: int) -> list[float]:
        """The feature row of a checked authorization of the card kept under ``key``; then remember it."""
        c = self.cards.get(key) or _Card()
        t = self.terminals.get(terminal) or _Terminal()
        out = feature_row(c, amount, time, self.terminal_counts(t, time))
        self.cards[key] = c.record(amount, time)
        self.terminals[terminal] = t.record(time, self.delay_us)
        self.labels[transaction_id] = (terminal, time, 0)
        return out

    def authorize_batch(
        self, transaction_ids: list[str], cards: list[str], terminals: list[str], amounts: list[float], times: list[int]
    ) -> np.ndarray:
        """:meth:`authorize` for each row in order, after :meth:`check` (all or nothing)."""
        for amount in amounts:
            check_amount(amount)
        keys = self._checked_keys(transaction_ids, cards, times)
        rows = zip(transaction_ids, keys, terminals, amounts, times, strict=True)
        return np.array([self._record(*row) for row in rows], dtype=np.float64).reshape(len(keys), _N_FEATURES)

    def terminal_counts(self, t: _Terminal, time: int) -> list[tuple[int, int]]:
        """(transactions, frauds) of each terminal window, which ends the label delay before ``time``."""
        end = bisect_right(t.times, time - self.delay_us)
        fraud_end = bisect_right(t.frauds, time - self.delay_us)
        out = []
        for size in TERMINAL_WINDOWS.values():
            edge = time - self.delay_us - size
            out.append((end - bisect_right(t.times, edge), fraud_end - bisect_right(t.frauds, edge)))
        return out

    # -- labels arriving late ------------------------------------------------------------------------------
    def check_labels(self, transaction_ids: list[str], labels: list[int]) -> None:
        """Raise :class:`InvalidInputError` if any label of this batch could not be recorded."""
        for txid, label in zip(transaction_ids, labels, strict=True):
            check_label(label)
            if txid not in self.labels:
                raise InvalidInputError(_UNKNOWN_TX)

    def report(self, transaction_id: str, label: int) -> None:
        """Record the fraud label (1) or its withdrawal (0) of an authorization scored earlier."""
        check_label(label)
        known = self.labels.get(transaction_id)
        if known is None:
            raise InvalidInputError(_UNKNOWN_TX)
        terminal, time, old = known
        if old == label:
            return  # reported twice: nothing changes
        t = self.terminals.setdefault(terminal, _Terminal())
        if label:
            insort(t.frauds, time)
        else:
            i = bisect_right(t.frauds, time) - 1
            if i >= 0 and t.frauds[i] == time:
                del t.frauds[i]
        self.labels[transaction_id] = (terminal, time, label)

    def prune_labels(self, now: int) -> None:
        """Forget transaction ids too old for any window to read their label."""
        horizon = now - self.delay_us - _TERMINAL_SPAN
        self.labels = {k: v for k, v in self.labels.items() if v[1] > horizon}

    # -- erasure ----------------------------------------------------------------------------------------------
    def forget(self, cards: Sequence[str]) -> list[bool]:
        """Erase these cards' histories (a GDPR erasure): True for each card that was held. Terminals and
        labels stay: they hold transactions, not cards. The card's next authorization is its first."""
        return [self.cards.pop(card_key(card, self.secret), None) is not None for card in cards]

    # -- snapshots --------------------------------------------------------------------------------------------
    def snapshot(self, path: str | os.PathLike[str]) -> Path:
        """Write the whole state to ``path`` (atomically: a reader sees the old file or the new one)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "version": SNAPSHOT_VERSION,
            "delay_us": self.delay_us,
            "cards": {
                k: [c.times, c.before, c.amounts, c.total, c.squares, c.count, c.last] for k, c in self.cards.items()
            },
            "terminals": {k: [t.times, t.frauds] for k, t in self.terminals.items()},
            "labels": self.labels,
        }
        # One partial file per process: a server snapshotting on unload and `finscore forget` rewriting the same
        # snapshot must not write into one partial file.
        tmp = p.with_name(f".{p.name}.{os.getpid()}.partial")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=3) as fh:
            json.dump(body, fh, separators=(",", ":"))
        tmp.replace(p)
        return p

    @classmethod
    def restore(cls, path: str | os.PathLike[str], *, secret: bytes) -> FraudState:
        """A state written by :meth:`snapshot`."""
        p = Path(path)
        try:
            with gzip.open(p, "rt", encoding="utf-8") as fh:
                body = json.load(fh)
            if body.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"snapshot version {body.get('version')}")
            state = cls(delay_us=body["delay_us"], secret=secret)
            state.cards = {k: _Card(*v) for k, v in body["cards"].items()}
            state.terminals = {k: _Terminal(*v) for k, v in body["terminals"].items()}
            state.labels = {k: (v[0], int(v[1]), int(v[2])) for k, v in body["labels"].items()}
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            msg = f"{p} is not a readable fraud state snapshot ({type(exc).__name__}); retrain or remove it"
            raise ModelNotReadyError(msg) from None
        return state
