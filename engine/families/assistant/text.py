"""The assistant's text: request checks and tokenisation, one module for training and serving.

Training and the served model tokenise through the same function (HF ``tokenizers``, Rust, reading the
``tokenizer.json`` every version carries), so what the network learned from is what it is asked: no
transformers and no torch at serving time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import InvalidInputError

__all__ = ["MAX_CHARS", "MAX_TOKENS", "check_text", "encode", "load_tokenizer"]

#: The longest question accepted, in characters: a customer's message, not a document. Longer text is refused
#: rather than cut, so nobody gets an answer to the first half of what they wrote.
MAX_CHARS = 1000
#: Word pieces the encoder reads per question (the sentence model's training length); longer questions are
#: truncated, which no question within :data:`MAX_CHARS` of plain words reaches often.
MAX_TOKENS = 128


def check_text(value: object, *, field: str = "text") -> str:
    """One question as ``str``: UTF-8 bytes or text, not empty (after spaces), at most :data:`MAX_CHARS`.

    >>> check_text(b"  where is my card? ")
    'where is my card?'
    """
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            msg = f"{field} must be UTF-8 text; the bytes sent are not valid UTF-8"
            raise InvalidInputError(msg) from None
    if not isinstance(value, str):
        msg = f"{field} must be text (BYTES), not {type(value).__name__}"
        raise InvalidInputError(msg)
    text = value.strip()
    if not text:
        msg = f"{field} is empty; send the customer's question"
        raise InvalidInputError(msg)
    if len(text) > MAX_CHARS:
        msg = f"{field} has {len(text)} characters; the limit is {MAX_CHARS}"
        raise InvalidInputError(msg)
    return text


def load_tokenizer(path: str | Path) -> object:
    """The word-piece tokenizer of ``tokenizer.json``: truncated at :data:`MAX_TOKENS`, padded to the longest
    question of a batch (the file's own fixed padding would make every question 128 pieces long)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def encode(tokenizer: object, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)``, both INT64 ``[len(texts), longest]``: what the exported graph reads."""
    batch = tokenizer.encode_batch(list(texts))  # type: ignore[attr-defined]
    ids = np.array([e.ids for e in batch], dtype=np.int64)
    mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
    return ids, mask
