"""Protection keys: versioned 32-byte master keys and the HKDF subkeys derived from them.

A :class:`KeyRing` comes from a key file of ``v<N> <64 hex digits>`` lines (mode 0600, refused when other
users can read it) or from ``FINSCORE_PROTECT_KEYS`` (same lines, ``;`` or newline separated). New data uses
the highest version; ``rotate`` appends a version, so older tokens and ciphertexts stay readable.
Errors name the file, entry or version, never a key.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.errors import DataFileError, InvalidInputError
from engine.settings import env_name, resolve_settings

__all__ = ["ENV_KEYS", "KeyRing"]

ENV_KEYS = env_name("protect_keys")

_KEY_LINE = re.compile(r"v([0-9]+)\s+([0-9a-fA-F]{64})")
_PURPOSES = {"token": b"finscore token", "encrypt": b"finscore encrypt"}


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
        text = resolve_settings().protect_keys
        if text is None:
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
