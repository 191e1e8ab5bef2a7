"""What is done to a batch command's output before any of it reaches a disk: the rule of PCI DSS 3.4.

``finscore score`` and ``scan`` copy a few input values into what they write (the id column; an alert's
record id, user, source address and file). :class:`OutputGuard` treats exactly those columns:

- every Luhn-valid card number in them is masked (first 6 / last 4 at most), always, key or not;
- columns named with ``--tokenize`` become keyed tokens (joinable), with ``--encrypt`` AES-GCM ciphertext
  (readable again with ``finscore protect --reveal``), both with the key ring of :mod:`engine.security.protect`;
- with a pseudonym key, each row's subject (the raw id, pseudonymised) is kept in
  :data:`engine.security.trail.SUBJECT` for the audit log and dropped before the output is written.

The guard travels with the work (to a Dask worker too), so checkpoint parts are protected like the output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from engine.errors import InvalidInputError
from engine.security.protect import KeyRing, protect_frame
from engine.security.trail import SUBJECT, subjects_of

__all__ = ["OutputGuard", "drop_subject"]


@dataclass(frozen=True)
class OutputGuard:
    """``carried``: the output columns holding input values; ``subject``: those naming the person a row is
    about, in order of preference (a row's first value present is its subject)."""

    carried: tuple[str, ...]
    tokenize: tuple[str, ...] = ()
    encrypt: tuple[str, ...] = ()
    keys: KeyRing | None = None
    subject: tuple[str, ...] = ()
    pseudonym_key: bytes | None = None

    @classmethod
    def build(
        cls,
        carried: Sequence[str],
        *,
        tokenize: Iterable[str] = (),
        encrypt: Iterable[str] = (),
        keys: KeyRing | None = None,
        subject: Sequence[str] = (),
        pseudonym_key: bytes | None = None,
    ) -> OutputGuard:
        """Check the asked columns against ``carried`` (raises :class:`InvalidInputError` naming them)."""
        tok, enc = tuple(dict.fromkeys(tokenize)), tuple(dict.fromkeys(encrypt))
        for action, cols in (("tokenize", tok), ("encrypt", enc)):
            for col in cols:
                if col not in carried:
                    msg = f"--{action} {col}: the output carries no such input column; choose from {', '.join(carried)}"
                    raise InvalidInputError(msg)
        both = set(tok) & set(enc)
        if both:
            msg = f"column {sorted(both)[0]!r} is asked to tokenize and to encrypt; choose one"
            raise InvalidInputError(msg)
        if (tok or enc) and keys is None:
            msg = "--tokenize and --encrypt need a key ring: --keys FILE or FINSCORE_PROTECT_KEYS"
            raise InvalidInputError(msg)
        return cls(tuple(carried), tok, enc, keys, tuple(subject), pseudonym_key)

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` protected (and with :data:`SUBJECT` added when a pseudonym key is set)."""
        # The columns that can name a row's subject, left out where no row has a value (a network event's
        # user and address): a frame without any gets no subject column, rather than one of nulls.
        named = [c for c in self.subject if c in frame.columns and frame.get_column(c).null_count() < frame.height]
        if self.pseudonym_key is not None and named:
            key = self.pseudonym_key
            raw = frame.select(pl.coalesce([pl.col(c).cast(pl.String) for c in named])).to_series()
            frame = frame.with_columns(subjects_of(raw, key))
        present = set(frame.columns)
        treated = set(self.tokenize) | set(self.encrypt)
        mask = [c for c in self.carried if c in present and c not in treated and _textual(frame, c)]
        return protect_frame(
            frame,
            tokenize=[c for c in self.tokenize if c in present],
            encrypt=[c for c in self.encrypt if c in present],
            mask=mask,
            keys=self.keys,
        )


def _textual(frame: pl.DataFrame, col: str) -> bool:
    """Text, or whole numbers long enough to be a card number (short ids keep their type)."""
    dtype = frame.schema[col]
    if dtype.is_integer():
        top = frame.get_column(col).abs().max()
        return top is not None and int(top) >= 10**12  # type: ignore[arg-type]
    return dtype == pl.String


def drop_subject(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` without the audit's subject column, as it is written."""
    return frame.drop(SUBJECT) if SUBJECT in frame.columns else frame
