"""Data protection for PCI DSS and GDPR: find and mask card numbers, tokenize, encrypt.

Three treatments, one per need:

- **mask** free text or a card-number column: every Luhn-valid run of 13-19 digits (single spaces or dashes
  allowed between groups) keeps at most its first 6 and last 4 digits, and always hides at least 6, so a
  13-15-digit number shows fewer leading digits. Not reversible.
- **tokenize** a column that must still join: ``tok<version>:`` + base64url(HMAC-SHA-256). The same value
  and key version give the same token; a card number is compacted first (``4111 1111 ...`` and
  ``4111111111111111`` join), other values are only stripped of outer blanks. Not reversible, and unlike
  a plain SHA-256 it cannot be brute-forced from the small space of card numbers without the key.
- **encrypt** a column that must be read back: ``enc<version>:`` + base64url(nonce + AES-256-GCM
  ciphertext), a random 96-bit nonce per value and the column name as associated data, so a ciphertext
  copied into another column, altered, or read with another key fails instead of decrypting to garbage.

Keys live in a :class:`~engine.security.keys.KeyRing` of versioned 32-byte master keys, from a file of ``v<N>
<64 hex digits>`` lines (mode 0600, refused when other users can read it) or from ``FINSCORE_PROTECT_KEYS``
(same lines, ``;`` or newline separated). There is no default key file: a secret in the working directory is
one ``git add`` away from a leak. New data uses the highest version; every output names its version, so
rotation (``protect-keys rotate`` appends a version) leaves old tokens matchable and old ciphertexts readable.
HKDF-SHA-256 derives separate token and encryption subkeys from each master key.

Errors name the column, row, version or file, never a value or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import overload

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.errors import DataFileError, InvalidInputError
from engine.security.cards import card_rows, find_cards
from engine.security.keys import ENV_KEYS, KeyRing
from engine.tables.io import read_table, write_table

__all__ = ["ENV_KEYS", "KeyRing", "decrypt", "encrypt", "mask_pan", "mask_text", "protect_file", "protect_frame",
    "reveal_file", "reveal_frame", "scan_files_for_pans", "token_matches", "tokenize"]  # fmt: skip

_TOKEN = re.compile(r"tok([0-9]+):([A-Za-z0-9_-]{43})")
_CIPHER = re.compile(r"enc([0-9]+):([A-Za-z0-9_-]+)")
_NONCE = 12


def mask_pan(pan: str) -> str:
    """``pan`` with every digit but the first 6 (fewer below 16 digits) and the last 4 turned into ``*``.

    Separators stay in place. Six digits stay hidden whatever the length, so a 13-digit number keeps 3.

    >>> mask_pan("4111-1111-1111-1111")
    '4111-11**-****-1111'
    """
    if re.fullmatch(r"[0-9]+(?:[ -][0-9]+)*", pan) is None:
        msg = "mask_pan expects a card number: digits with single spaces or dashes between groups"
        raise InvalidInputError(msg)
    n = sum(ch.isdigit() for ch in pan)
    if not 13 <= n <= 19:
        msg = f"mask_pan expects a card number of 13 to 19 digits, got {n} digits"
        raise InvalidInputError(msg)
    lead, out, k = min(6, n - 10), [], 0
    for ch in pan:
        if ch.isdigit():
            out.append(ch if k < lead or k >= n - 4 else "*")
            k += 1
        else:
            out.append(ch)
    return "".join(out)


def mask_text(text: str) -> str:
    """``text`` with every card number found by :func:`~engine.security.cards.find_cards` masked.

    >>> mask_text("paid with 4111 1111 1111 1111, ref 12345")
    'paid with 4111 11** **** 1111, ref 12345'
    """
    return _masked(text, find_cards(text))


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for start, end in spans:
        out += [text[last:start], mask_pan(text[start:end])]
        last = end
    return "".join(out) + text[last:]


def scan_files_for_pans(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, int]]:
    """``(file, card numbers found)`` for every text file in ``paths`` (folders are walked).

    A file with a NUL byte in its first 8 KiB is taken as binary (Parquet, gzip) and left out of the
    result: its bytes say nothing reliable about the values inside.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            msg = f"{path}: no such file or folder"
            raise DataFileError(msg)
    found = []
    for f in files:
        with f.open("rb") as fh:
            if b"\0" in fh.read(8192):
                continue
        with f.open("r", encoding="utf-8", errors="replace") as fh:
            found.append((f, sum(len(find_cards(line)) for line in fh)))
    return found


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _normalize(value: str) -> str:
    value = value.strip()
    if find_cards(value) == [(0, len(value))]:
        return re.sub(r"[ -]", "", value)
    return value


def _token(value: str, keys: KeyRing, version: int) -> str:
    mac = hmac.new(keys.subkey("token", version), _normalize(value).encode("utf-8"), hashlib.sha256)
    return f"tok{version}:{_b64(mac.digest())}"


def _series(s: pl.Series, fn: Callable[[str], str]) -> pl.Series:
    """``fn`` over a column read as text; nulls stay null."""
    return pl.Series(s.name, [None if v is None else fn(v) for v in s.cast(pl.String).to_list()], dtype=pl.String)


@overload
def tokenize(value: str, keys: KeyRing, *, version: int | None = None) -> str: ...
@overload
def tokenize(value: pl.Series, keys: KeyRing, *, version: int | None = None) -> pl.Series: ...
def tokenize(value: str | pl.Series, keys: KeyRing, *, version: int | None = None) -> str | pl.Series:
    """The deterministic token of ``value`` (or of each value of a column; nulls stay null)."""
    v = keys.current if version is None else version
    if isinstance(value, pl.Series):
        values = value.cast(pl.String).to_list()
        table = {x: _token(x, keys, v) for x in set(values) - {None}}  # a card in many rows is hashed once
        return pl.Series(value.name, [None if x is None else table[x] for x in values], dtype=pl.String)
    return _token(value, keys, v)


def _matches(value: str, token: str, keys: KeyRing, expected: dict[int, str]) -> bool:
    m = _TOKEN.fullmatch(token)
    if m is None:
        msg = "not a finscore token: expected 'tok<version>:' and 43 base64url characters"
        raise InvalidInputError(msg)
    version = int(m.group(1))
    if version not in expected:
        expected[version] = _token(value, keys, version)
    return hmac.compare_digest(token, expected[version])


@overload
def token_matches(value: str, token: str, keys: KeyRing) -> bool: ...
@overload
def token_matches(value: str, token: pl.Series, keys: KeyRing) -> pl.Series: ...
def token_matches(value: str, token: str | pl.Series, keys: KeyRing) -> bool | pl.Series:
    """Whether ``token`` (or each token of a column) is the token of ``value``, with the token's own key
    version, so tokens made before a rotation still match."""
    expected: dict[int, str] = {}
    if isinstance(token, pl.Series):
        flags = [None if t is None else _matches(value, t, keys, expected) for t in token.cast(pl.String).to_list()]
        return pl.Series(token.name, flags, dtype=pl.Boolean)
    return _matches(value, token, keys, expected)


def encrypt(value: str, keys: KeyRing, *, context: str) -> str:
    """``value`` under AES-256-GCM with the current key; ``context`` (the column) must match to decrypt."""
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(keys.subkey("encrypt", keys.current)).encrypt(nonce, value.encode("utf-8"), context.encode())
    return f"enc{keys.current}:{_b64(nonce + sealed)}"


def decrypt(text: str, keys: KeyRing, *, context: str) -> str:
    """The value :func:`encrypt` sealed; a wrong key, context or altered text is an :class:`InvalidInputError`."""
    m = _CIPHER.fullmatch(text)
    try:
        raw = _unb64(m.group(2)) if m else b""
    except binascii.Error:
        raw = b""
    if m is None or len(raw) < _NONCE + 16:
        msg = f"a value in {context!r} is not a finscore ciphertext ('enc<version>:' and base64url)"
        raise InvalidInputError(msg)
    aes = AESGCM(keys.subkey("encrypt", int(m.group(1))))
    try:
        return aes.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode("utf-8")
    except InvalidTag:
        msg = f"a value in {context!r} cannot be decrypted: wrong key, wrong column, or altered"
        raise InvalidInputError(msg) from None


_decrypt = decrypt  # reveal_frame's keyword argument shadows the name


def _check_columns(df: pl.DataFrame, plan: Mapping[str, Iterable[str]], source: str) -> dict[str, list[str]]:
    lists = {action: list(dict.fromkeys(cols)) for action, cols in plan.items()}
    seen: dict[str, str] = {}
    for action, cols in lists.items():
        for col in cols:
            if col not in df.columns:
                shown = ", ".join(repr(c) for c in df.columns[:20]) + (" …" if df.width > 20 else "")
                msg = f"{source}: no column {col!r} to {action}; the columns are {shown}"
                raise DataFileError(msg)
            if col in seen:
                msg = f"column {col!r} is asked to {seen[col]} and to {action}; choose one"
                raise InvalidInputError(msg)
            seen[col] = action
    return lists


def _protect(
    df: pl.DataFrame,
    tokenize_: Iterable[str],
    encrypt_: Iterable[str],
    mask: Iterable[str],
    keys: KeyRing | None,
    source: str = "table",
    *,
    count_left: bool = True,
) -> tuple[pl.DataFrame, dict[str, int]]:
    plan = _check_columns(df, {"tokenize": tokenize_, "encrypt": encrypt_, "mask": mask}, source)
    if (plan["tokenize"] or plan["encrypt"]) and keys is None:
        msg = "tokenizing or encrypting needs a key ring"
        raise InvalidInputError(msg)
    counts = dict.fromkeys(("rows", "tokenized", "encrypted", "masked", "pans_found", "pans_left"), 0)
    counts["rows"] = df.height
    out = []
    for col in plan["tokenize"]:
        assert keys is not None
        out.append(tokenize(df[col], keys))
        counts["tokenized"] += df.height - df[col].null_count()
    for col in plan["encrypt"]:
        assert keys is not None
        out.append(_series(df[col], partial(encrypt, keys=keys, context=col)))
        counts["encrypted"] += df.height - df[col].null_count()
    for col in plan["mask"]:
        text = df[col].cast(pl.String)
        rows, spans = card_rows(text)
        counts["masked"] += sum(1 for found in spans if found)
        counts["pans_found"] += sum(map(len, spans))
        changed = [(r, _masked(text[r], found)) for r, found in zip(rows, spans, strict=True) if found]
        if changed:
            at, masked = zip(*changed, strict=True)
            text = text.scatter(list(at), pl.Series(masked, dtype=pl.String))
        out.append(text.alias(col))
    touched = {c for cols in plan.values() for c in cols}
    for col in df.columns if count_left else ():  # card numbers as text or integers (CSV bare numbers)
        if col not in touched and (df[col].dtype == pl.String or df[col].dtype.is_integer()):
            counts["pans_left"] += sum(map(len, card_rows(df[col].cast(pl.String))[1]))
    return (df.with_columns(out) if out else df), counts


def protect_frame(
    df: pl.DataFrame,
    *,
    tokenize: Iterable[str] = (),
    encrypt: Iterable[str] = (),
    mask: Iterable[str] = (),
    keys: KeyRing | None = None,
) -> pl.DataFrame:
    """``df`` with the named columns tokenized, encrypted (context: the column name) or masked.

    Treated columns become text; nulls stay null; other columns are left as they are. ``keys`` is needed
    only to tokenize or encrypt.
    """
    return _protect(df, tokenize, encrypt, mask, keys, count_left=False)[0]


def reveal_frame(df: pl.DataFrame, *, decrypt: Iterable[str] = (), keys: KeyRing) -> pl.DataFrame:
    """``df`` with the named encrypted columns decrypted back to text."""
    cols = _check_columns(df, {"decrypt": decrypt}, "table")["decrypt"]
    out = []
    for col in cols:
        values = df[col].cast(pl.String).to_list()
        plain: list[str | None] = []
        for row, v in enumerate(values):
            try:
                plain.append(None if v is None else _decrypt(v, keys, context=col))
            except InvalidInputError as exc:
                msg = f"row {row + 1}: {exc}"
                raise InvalidInputError(msg) from None
        out.append(pl.Series(col, plain, dtype=pl.String))
    return df.with_columns(out) if out else df


def protect_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    tokenize: Iterable[str] = (),
    encrypt: Iterable[str] = (),
    mask: Iterable[str] = (),
    keys: KeyRing | None = None,
) -> dict[str, int]:
    """Protect a CSV or Parquet file into ``dst`` (format from its extension, written atomically).

    Returns the counts ``rows``, ``tokenized``, ``encrypted``, ``masked`` (values changed), ``pans_found``
    (in masked columns) and ``pans_left`` (card numbers in text or integer columns left as they are).
    """
    df, counts = _protect(read_table(src), tokenize, encrypt, mask, keys, str(src))
    write_table(df, dst)
    return counts


def reveal_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, decrypt: Iterable[str], keys: KeyRing
) -> dict[str, int]:
    """Decrypt the named columns of a file into ``dst``; returns ``rows`` and ``decrypted`` counts."""
    df = read_table(src)
    cols = list(decrypt)
    write_table(reveal_frame(df, decrypt=cols, keys=keys), dst)
    return {"rows": df.height, "decrypted": sum(df.height - df[c].null_count() for c in dict.fromkeys(cols))}
