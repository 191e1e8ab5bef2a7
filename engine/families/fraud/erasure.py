"""The fraud model's erasure store: a card's history, wherever finscore keeps it.

A card is kept under its keyed digest (:func:`engine.families.fraud.state.card_key`, the key in
``<repo>/fraud/card-key.bin``) in four kinds of place, erased in this order:

1. a running server's memory (``ctx.url``), through the model's ``forget`` input: first, because a server
   snapshots its memory when it unloads and would write the card back into the files;
2. each version's starting state, ``<repo>/fraud/<N>/state.json.gz``;
3. the live state a server left, ``<repo>/fraud/state/live.json.gz``;
4. the state shared in Redis (``ctx.redis_url``), in the namespace of each version's label delay.

Snapshots are rewritten atomically, and only when they held one of the cards. Terminal histories and
transaction labels hold no card and stay. No server at ``ctx.url`` is not an error (the usual case when the
command runs beside a stopped server), but the line says what it means.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.errors import FinscoreError, InvalidInputError, ModelNotReadyError, NotFoundError, ServerUnavailableError
from engine.families.fraud.redis_state import redacted_url
from engine.families.fraud.scorer import INITIAL_STATE, KEY_FILE, LIVE_STATE, PARAMS_FILE
from engine.families.fraud.state import FraudState
from engine.security.erasure import Erased, ErasureContext, erasure_store
from engine.serving.repository import ModelRepository

__all__ = ["forget_cards"]

STORE = "fraud"


def _none(n: int) -> tuple[int, ...]:
    return (0,) * n


def _server(cards: Sequence[str], url: str, tls: Any) -> Erased:
    from clients.fraud import FraudClient

    place = f"server {url}"
    try:
        with FraudClient(url, tls=tls) as client:
            held = client.forget(cards)
    except ServerUnavailableError:
        note = (
            f"no server at {url}: a server running elsewhere on this repository must be stopped first or it will "
            "write the card back"
        )
        return Erased(STORE, place, _none(len(cards)), note)
    except NotFoundError:
        return Erased(STORE, place, _none(len(cards)), f"the server at {url} does not serve the fraud model")
    except ModelNotReadyError:
        # Not loaded, so nothing in memory: its next load reads the files, erased below.
        return Erased(STORE, place, _none(len(cards)), f"the fraud model is not loaded at {url}")
    except InvalidInputError as exc:
        if "'forget'" not in str(exc):
            raise
        msg = (
            f"the fraud model served at {url} cannot erase a card (its config has no 'forget' input: it was "
            "trained by an older finscore); retrain it, or stop the server and run forget with --no-server"
        )
        raise InvalidInputError(msg) from None
    return Erased(STORE, place, tuple(int(h) for h in held))


def _snapshot(path: Path, cards: Sequence[str], secret: bytes) -> Erased:
    try:
        state = FraudState.restore(path, secret=secret)
        removed = state.forget(cards)
        if any(removed):
            state.snapshot(path)
    except (FinscoreError, OSError) as exc:
        note = f"not erased: {exc}" if isinstance(exc, FinscoreError) else f"not rewritten ({exc.strerror})"
        return Erased(STORE, str(path), _none(len(cards)), note, complete=False)
    return Erased(STORE, str(path), tuple(int(r) for r in removed))


def _delays(model: Path, versions: list[int]) -> list[int]:
    """The label delays of the versions: each has its own namespace in Redis."""
    out: set[int] = set()
    for v in versions:
        try:
            out.add(int(json.loads((model / str(v) / PARAMS_FILE).read_text(encoding="utf-8"))["delay_us"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(out)


def _redis(cards: Sequence[str], url: str, delays: list[int], secret: bytes) -> Erased:
    from engine.families.fraud.redis_state import RedisFraudState

    place = f"redis {redacted_url(url)}"
    if not delays:
        return Erased(STORE, place, _none(len(cards)), "no trained version names a label delay", complete=False)
    removed = [0] * len(cards)
    try:
        # Its errors name the URL, password and all: they are not passed on.
        first = RedisFraudState.connect(url, delay_us=delays[0], secret=secret)
    except FinscoreError:
        return Erased(STORE, place, tuple(removed), "does not answer: start it, then run forget again", complete=False)
    try:
        for delay in delays:
            state = RedisFraudState(first.client, delay_us=delay, secret=secret, url=first.url)
            removed = [r + int(h) for r, h in zip(removed, state.forget(cards), strict=True)]
    except FinscoreError:
        note = "stopped answering: run forget again"
        return Erased(STORE, place, tuple(removed), note, complete=False)
    finally:
        first.client.close()
    return Erased(STORE, place, tuple(removed))


@erasure_store(STORE)
def forget_cards(subjects: Sequence[str], ctx: ErasureContext) -> list[Erased]:
    """Erase the cards named ``subjects`` from the fraud model's state everywhere it is kept."""
    cards = list(subjects)
    if ctx.redis_url and urlsplit(ctx.redis_url).scheme not in {"redis", "rediss", "unix"}:
        msg = "--fraud-redis must be a Redis URL such as redis://127.0.0.1:6379/0"
        raise InvalidInputError(msg)
    results = [_server(cards, ctx.url, ctx.tls)] if ctx.url else []
    repo = ModelRepository(ctx.repo)
    model = repo.model_dir(STORE)
    key_file = model / KEY_FILE
    if not key_file.is_file():
        results.append(Erased(STORE, str(model), _none(len(cards)), "no trained fraud model: no card is kept here"))
        return results
    try:
        secret = key_file.read_bytes()
    except OSError as exc:
        msg = f"{key_file}: the card key cannot be read ({exc.strerror}), so no card can be found"
        raise ModelNotReadyError(msg) from None
    versions = repo.versions(STORE)
    for path in [model / str(v) / INITIAL_STATE for v in versions] + [model / LIVE_STATE]:
        if path.is_file():
            results.append(_snapshot(path, cards, secret))
    if ctx.redis_url:
        results.append(_redis(cards, ctx.redis_url, _delays(model, versions), secret))
    return results
