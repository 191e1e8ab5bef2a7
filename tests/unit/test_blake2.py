"""Keyed BLAKE2b of a column (kernels.blake2) against hashlib, and the pseudonyms built on it."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInputError
from engine.security.audit import pseudonym, pseudonyms
from kernels.blake2 import blake2b_hex, keyed_state

# Lengths around the 128-byte block: the last block full, one byte over, several blocks, none at all.
EDGES = ["", "a", "é" * 63, "x" * 127, "x" * 128, "x" * 129, "y" * 256, "z" * 257, "€" * 300]


def _hashlib(value: str | None, key: bytes, size: int, person: bytes) -> str | None:
    if value is None:
        return None
    return hashlib.blake2b(value.encode("utf-8"), key=key, digest_size=size, person=person).hexdigest()


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.text(max_size=300)), max_size=20),
    key=st.binary(min_size=1, max_size=64),
    size=st.integers(1, 64),
    person=st.binary(max_size=16),
)
def test_matches_hashlib(values: list[str | None], key: bytes, size: int, person: bytes) -> None:
    got = blake2b_hex(
        pl.Series(values + EDGES, dtype=pl.String), keyed_state(key, digest_size=size, person=person), size
    )
    assert got.to_list() == [_hashlib(v, key, size, person) for v in values + EDGES]


def test_a_slice_of_a_column() -> None:
    column = pl.Series([f"user{i}" for i in range(100)] + EDGES).slice(37, 50)
    state = keyed_state(b"k" * 32, digest_size=16, person=b"p")
    assert blake2b_hex(column, state, 16).to_list() == [_hashlib(v, b"k" * 32, 16, b"p") for v in column]


def test_pseudonyms_are_pseudonym_of_each_value() -> None:
    key = b"s" * 32
    values = ["C0001", None, "Zoë", "4111 1111 1111 1111", *EDGES[1:]]
    assert pseudonyms(pl.Series(values), key).to_list() == [None if v is None else pseudonym(v, key) for v in values]
    with pytest.raises(InvalidInputError, match="16 to 64 bytes"):
        pseudonyms(pl.Series(["a"]), b"short")
    with pytest.raises(ValueError, match="1-64 bytes"):
        keyed_state(b"k" * 65, digest_size=16)
