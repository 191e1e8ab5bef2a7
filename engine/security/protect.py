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

Keys live in a :class:`KeyRing` of versioned 32-byte master keys, from a file of ``v<N> <64 hex digits>``
lines (mode 0600, refused when other users can read it) or from ``FINSCORE_PROTECT_KEYS`` (same lines,
``;`` or newline separated). There is no default key file: a secret in the working directory is one
``git add`` away from a leak. New data uses the highest version; every output names its version, so
rotation (``protect-keys rotate`` appends a version) leaves old tokens matchable and old ciphertexts
readable. HKDF-SHA-256 derives separate token and encryption subkeys from each master key.

Errors name the column, row, version or file, never a value or a key.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import overload

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.errors import DataFileError, InvalidInputError
from engine.tables.io import read_table, write_table

__all__ = ["ENV_KEYS", "KeyRing", "add_protect_arguments", "decrypt", "encrypt", "find_pans", "luhn_valid",
    "pan_candidates", "mask_pan", "mask_text", "protect_file", "protect_frame", "reveal_file", "reveal_frame",
    "run_protect", "run_protect_keys", "scan_files_for_pans", "scan_text_for_pans", "token_matches",
    "tokenize"]  # fmt: skip

ENV_KEYS = "FINSCORE_PROTECT_KEYS"

# [0-9], not \d: \d also matches other scripts' digits, which no card network issues.
_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")
_CANDIDATE = re.compile(r"[0-9](?:[ -]?[0-9]){12}")
_KEY_LINE = re.compile(r"v([0-9]+)\s+([0-9a-fA-F]{64})")
_TOKEN = re.compile(r"tok([0-9]+):([A-Za-z0-9_-]{43})")
_CIPHER = re.compile(r"enc([0-9]+):([A-Za-z0-9_-]+)")
_PURPOSES = {"token": b"finscore token", "encrypt": b"finscore encrypt"}
_NONCE = 12


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (ASCII digits only, no separators) pass the Luhn check.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the Luhn-valid card numbers in ``text``.

    A run of digit groups joined by single spaces or dashes is searched for consecutive whole groups of
    13-19 digits in all, longest first, so ``2024-01-15 4111 1111 1111 1111`` yields the card and a
    group longer than 19 digits (an id, a hash) yields nothing.
    """
    spans: list[tuple[int, int]] = []
    for run in _RUN.finditer(text):
        if run.end() - run.start() < 13:
            continue
        base = run.start()
        groups = [(base + m.start(), base + m.end()) for m in _GROUP.finditer(run.group())]
        i = 0
        while i < len(groups):
            found = None
            ends, total = [], 0
            for j in range(i, len(groups)):
                total += groups[j][1] - groups[j][0]
                if total > 19:
                    break
                if total >= 13:
                    ends.append(j)
            for j in reversed(ends):
                start, end = groups[i][0], groups[j][1]
                if luhn_valid(re.sub(r"[ -]", "", text[start:end])):
                    found = j
                    spans.append((start, end))
                    break
            i = found + 1 if found is not None else i + 1
    return spans


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
    """``text`` with every card number found by :func:`find_pans` masked.

    >>> mask_text("paid with 4111 1111 1111 1111, ref 12345")
    'paid with 4111 11** **** 1111, ref 12345'
    """
    return _masked(text, find_pans(text))


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for start, end in spans:
        out += [text[last:start], mask_pan(text[start:end])]
        last = end
    return "".join(out) + text[last:]


def scan_text_for_pans(text: str) -> int:
    """How many Luhn-valid card numbers ``text`` holds."""
    return len(find_pans(text))


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
            found.append((f, sum(len(find_pans(line)) for line in fh)))
    return found


class KeyRing:
    """Versioned 32-byte master keys; the highest version protects new data.

    ``repr`` shows the versions only, so a key ring in a log or a traceback reveals nothing.
    """

    def __init__(self, keys: Mapping[int, bytes]) -> None:
        if not keys:
            msg = "a key ring needs at least one key version"
            raise InvalidInputError(msg)
        for version, key in keys.items():
            if version < 1 or len(key) != 32:
                msg = f"key version {version}: expected a version >= 1 and a 32-byte key"
                raise InvalidInputError(msg)
        self._keys = dict(keys)
        self._subkeys: dict[tuple[str, int], bytes] = {}

    def __repr__(self) -> str:
        return f"KeyRing(versions={list(self.versions)})"

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    @property
    def current(self) -> int:
        return max(self._keys)

    def subkey(self, purpose: str, version: int) -> bytes:
        """The HKDF-SHA-256 subkey for ``purpose`` (``"token"`` or ``"encrypt"``) of ``version``."""
        if version not in self._keys:
            msg = f"key version {version} is not in the key ring (it holds {list(self.versions)})"
            raise InvalidInputError(msg)
        cached = self._subkeys.get((purpose, version))
        if cached is None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSES[purpose])
            cached = self._subkeys[(purpose, version)] = hkdf.derive(self._keys[version])
        return cached

    @classmethod
    def parse(cls, text: str, *, source: str) -> KeyRing:
        """Keys from ``v<N> <64 hex digits>`` entries, one per line or ``;``; ``#`` starts a comment."""
        keys: dict[int, bytes] = {}
        for n, entry in enumerate(re.split(r"[;\n]", text), start=1):
            entry = entry.split("#", 1)[0].strip()
            if not entry:
                continue
            m = _KEY_LINE.fullmatch(entry)
            if m is None:  # the entry may hold a key: never shown
                msg = f"{source}: entry {n} is not 'v<N> <64 hex digits>'"
                raise InvalidInputError(msg)
            version = int(m.group(1))
            if version in keys:
                msg = f"{source}: key version {version} appears twice"
                raise InvalidInputError(msg)
            keys[version] = bytes.fromhex(m.group(2))
        if not keys:
            msg = f"{source}: no keys; create a key file with `finscore protect-keys generate --keys FILE`"
            raise InvalidInputError(msg)
        return cls(keys)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Keys from a key file that no other user can read (not checked where modes mean nothing: Windows)."""
        p = Path(path)
        if not p.is_file():
            msg = f"{p}: no such key file"
            raise DataFileError(msg)
        mode = p.stat().st_mode & 0o777
        if os.name == "posix" and mode & 0o077:
            msg = f"{p}: the key file is open to other users (mode {mode:04o}); run chmod 600 on it"
            raise DataFileError(msg)
        try:
            return cls.parse(p.read_text(encoding="utf-8"), source=str(p))
        except UnicodeDecodeError:
            msg = f"{p}: not a key file (not UTF-8 text)"
            raise DataFileError(msg) from None
        except InvalidInputError as exc:
            raise DataFileError(str(exc)) from None

    @classmethod
    def from_env_or_file(cls, path: str | os.PathLike[str] | None = None) -> KeyRing:
        """The key file at ``path`` when given, else the keys in ``FINSCORE_PROTECT_KEYS``."""
        if path is not None:
            return cls.load(path)
        text = os.environ.get(ENV_KEYS, "")
        if not text.strip():
            msg = f"no protection keys: give --keys FILE or set {ENV_KEYS} (`finscore protect-keys generate`)"
            raise InvalidInputError(msg)
        return cls.parse(text, source=ENV_KEYS)

    @classmethod
    def generate(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Create a key file (mode 0600) holding version 1; an existing file is never overwritten."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            msg = f"{p}: a key file already exists; `finscore protect-keys rotate` adds a version to it"
            raise DataFileError(msg) from None
        key = secrets.token_bytes(32)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("# finscore protection keys. Keep secret and backed up: encrypted data needs them.\n")
            fh.write(f"v1 {key.hex()}\n")
        return cls({1: key})

    @classmethod
    def rotate(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Append the next version to a key file; it becomes current, older ones still read old data."""
        p = Path(path)
        ring = cls.load(p)
        version, key = ring.current + 1, secrets.token_bytes(32)
        text = p.read_text(encoding="utf-8")
        with p.open("a", encoding="utf-8") as fh:
            fh.write(("" if text.endswith("\n") or not text else "\n") + f"v{version} {key.hex()}\n")
        return cls({**ring._keys, version: key})


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _normalize(value: str) -> str:
    value = value.strip()
    if find_pans(value) == [(0, len(value))]:
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
        rows, spans = _pans_in(text)
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
            counts["pans_left"] += sum(map(len, _pans_in(df[col].cast(pl.String))[1]))
    return (df.with_columns(out) if out else df), counts


def pan_candidates(text: pl.Series) -> pl.Series:
    """Whether each value of ``text`` could hold a card number (13 digits, spaced or not), found by Polars:
    only these need :func:`find_pans`, so a column of short ids costs no Python call per value."""
    return text.str.contains(_CANDIDATE.pattern).fill_null(False)


def _pans_in(text: pl.Series) -> tuple[list[int], list[list[tuple[int, int]]]]:
    """The rows of ``text`` that could hold a card number (:func:`pan_candidates`), and :func:`find_pans` of each."""
    rows = pan_candidates(text).arg_true().to_list()
    return rows, [find_pans(v) for v in text.gather(rows).to_list()] if rows else []


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


def add_protect_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``protect`` and ``protect-keys`` to the CLI's subcommands, each with ``func`` set."""
    p = sub.add_parser("protect", help="tokenize, encrypt or mask columns of a CSV or Parquet file (PCI DSS, GDPR)")
    p.add_argument("file", type=Path, metavar="FILE", help="CSV or Parquet table")
    p.add_argument("--out", required=True, type=Path, help="protected table: .csv or .parquet")
    for flag, what in (
        ("--tokenize", "replace by a keyed token that still joins (repeatable)"),
        ("--encrypt", "encrypt with AES-GCM, readable again with --reveal (repeatable)"),
        ("--mask", "mask the card numbers in it, first 6 and last 4 at most (repeatable)"),
    ):
        p.add_argument(flag, action="append", default=[], metavar="COL", help=f"column to {what}")
    p.add_argument("--keys", type=Path, metavar="FILE", help=f"key file (default: the keys in {ENV_KEYS})")
    p.add_argument("--reveal", action="store_true", help="decrypt the --encrypt columns instead")
    p.set_defaults(func=run_protect)
    k = sub.add_parser("protect-keys", help="create a protection key file, or add a key version to it")
    k.add_argument("action", choices=("generate", "rotate"), help="generate: new file with v1; rotate: add a version")
    k.add_argument("--keys", required=True, type=Path, metavar="FILE", help="the key file")
    k.set_defaults(func=run_protect_keys)


def run_protect(args: argparse.Namespace) -> int:
    """``finscore protect``: print one line of counts, never a value."""
    if args.reveal:
        if args.tokenize or args.mask or not args.encrypt:
            print("Error: --reveal decrypts the --encrypt columns; tokens and masks cannot be undone", file=sys.stderr)
            return 2
        c = reveal_file(args.file, args.out, decrypt=args.encrypt, keys=KeyRing.from_env_or_file(args.keys))
        print(f"{args.out}: {c['rows']:,} rows; {c['decrypted']:,} values decrypted")
        return 0
    if not (args.tokenize or args.encrypt or args.mask):
        print("Error: nothing to do: give --tokenize, --encrypt or --mask COL", file=sys.stderr)
        return 2
    keys = KeyRing.from_env_or_file(args.keys) if args.tokenize or args.encrypt else None
    c = protect_file(args.file, args.out, tokenize=args.tokenize, encrypt=args.encrypt, mask=args.mask, keys=keys)
    print(
        f"{args.out}: {c['rows']:,} rows; {c['tokenized']:,} values tokenized, {c['encrypted']:,} encrypted, "
        f"{c['masked']:,} masked ({c['pans_found']:,} card numbers)"
    )
    if c["pans_left"]:
        print(f"Warning: {c['pans_left']:,} card numbers remain in columns left as they are", file=sys.stderr)
    return 0


def run_protect_keys(args: argparse.Namespace) -> int:
    """``finscore protect-keys generate|rotate``: print the new version and the file, never a key."""
    ring = KeyRing.generate(args.keys) if args.action == "generate" else KeyRing.rotate(args.keys)
    print(f"{args.keys}: key version {ring.current} is now current (versions {', '.join(map(str, ring.versions))})")
    return 0
