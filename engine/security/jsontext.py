"""JSON text of a frame's values, a column at a time: for writers of many JSON lines (the audit log).

``json.dumps`` of one dict per row costs microseconds a row in Python; here Polars writes the text, and only
values that need escaping go through Python's encoder. The text is what ``json.dumps(value,
ensure_ascii=True)`` writes, except that floats are spelled the shortest way that reads back to the same
number (``1e-7`` where Python writes ``1e-07``): the same JSON value.

>>> import polars as pl
>>> frame = pl.DataFrame({"id": ["a", 'say "hi"', None], "n": [1, None, 3], "p": [0.5, 1e-7, None]})
>>> json_members(frame).to_list()
['"id":"a","n":1,"p":0.5', '"id":"say \\\\"hi\\\\"","n":null,"p":1e-7', '"id":null,"n":3,"p":null']
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa

from engine.errors import InvalidInputError

__all__ = ["PLAIN", "encode", "json_member_parts", "json_members", "json_values", "plain"]

#: One value as compact ASCII JSON (no NaN or infinity): what every line these writers write is made of.
encode = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode
#: Printable ASCII without ``"`` and ``\``: text JSON writes between quotes as it is.
PLAIN = r"^[ !#-\[\]-~]*$"


def plain(values: pl.Series) -> bool:
    """Whether every value of a text column is :data:`PLAIN`, read off the bytes of its Arrow buffer in one
    NumPy pass (a regular expression value by value took 7 times longer). Bytes the buffer holds beyond the
    values (a slice's neighbours, a missing value's) can only say no, and the caller then checks each value."""
    text = values.cast(pl.String).to_arrow()
    if text.type != pa.large_string():
        text = text.cast(pa.large_string())
    if not len(text):
        return True
    _, offsets, data = text.buffers()
    if data is None:
        return True
    ends = np.frombuffer(offsets, dtype=np.int64)[[text.offset, text.offset + len(text)]]
    b = np.frombuffer(data, dtype=np.uint8)[ends[0] : ends[1]]
    return not ((b < 0x20) | (b == 0x22) | (b == 0x5C) | (b > 0x7E)).any()


def json_values(values: pl.Series) -> pl.Series:
    """Each value of ``values`` as JSON text (ASCII): strings quoted and escaped, numbers, ``true``/``false``,
    ``null`` for a missing value.

    Raises
    ------
    InvalidInputError
        For a NaN or infinite number, or a column that is not text, numbers or yes/no.
    """
    dtype = values.dtype
    if dtype == pl.Null:
        return pl.Series(values.name, ["null"] * len(values), dtype=pl.String)
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        text = values.cast(pl.String)
        out = ('"' + text + '"').alias(values.name)
        special = (~text.str.contains(PLAIN)).fill_null(False)
        if special.any():  # quotes, backslashes, control characters, non-ASCII: Python's encoder escapes them
            at = special.arg_true()
            out = out.scatter(at, pl.Series([encode(v) for v in text.gather(at).to_list()], dtype=pl.String))
        return out.fill_null("null")
    if dtype.is_float():
        if (~values.is_finite()).fill_null(False).any():
            msg = f"column {values.name!r} holds a NaN or infinite number; JSON has none"
            raise InvalidInputError(msg)
        return values.cast(pl.String).fill_null("null")
    if dtype.is_integer() or dtype == pl.Boolean:
        return values.cast(pl.String).fill_null("null")
    msg = f"column {values.name!r} is {dtype}; JSON lines take text, numbers or yes/no columns"
    raise InvalidInputError(msg)


def json_members(frame: pl.DataFrame) -> pl.Series:
    """Per row, the members of its JSON object without the braces: ``"column":value,...`` in column order.

    Two passes over the frame whatever its width: one finds the columns with text to escape (and refuses NaN or
    infinity), one writes every row; only a column with text to escape goes through :func:`json_values`.
    """
    if not frame.width:
        return pl.Series("members", [""] * frame.height, dtype=pl.String)
    framed, parts = json_member_parts(frame)
    return framed.select(pl.concat_str(parts).alias("members")).to_series()


def json_member_parts(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.Expr]]:
    """What :func:`json_members` concatenates: expressions over the returned frame (``frame`` with each column
    that needs Python's encoder already replaced by its JSON text), for a writer that frames the members in
    the same pass (the audit log writes whole lines so, copying the text once). No expressions for no columns.
    """
    flags = []
    found: dict[str, bool] = {}
    for name in frame.columns:
        dtype, col = frame.schema[name], pl.col(name)
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            found[name] = not plain(frame.get_column(name))
        elif dtype.is_float():
            flags.append((~col.is_finite()).fill_null(False).any().alias(name))
    if flags:
        found.update(frame.select(flags).row(0, named=True))
    # One flat list of columns and the text between them: a column with no missing value needs no
    # fill_null, one with none present is the text null, and neighbouring texts are one literal.
    parts: list[pl.Expr] = []
    encoded: list[pl.Series] = []
    text = ""
    for i, name in enumerate(frame.columns):
        text += ("," if i else "") + encode(name) + ":"
        dtype, col = frame.schema[name], pl.col(name)
        missing = frame.get_column(name).null_count()
        if found.get(name) or not (dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.String):
            encoded.append(json_values(frame.get_column(name)))  # escapes, refusals, other types
            parts += [pl.lit(text), col]
            text = ""
        elif missing == frame.height:
            text += "null"
        elif dtype == pl.String and not missing:
            parts += [pl.lit(text + '"'), col]
            text = '"'
        elif dtype == pl.String:
            parts += [pl.lit(text), (pl.lit('"') + col + pl.lit('"')).fill_null("null")]
            text = ""
        else:
            parts += [pl.lit(text), col.cast(pl.String) if not missing else col.cast(pl.String).fill_null("null")]
            text = ""
    if text:
        parts.append(pl.lit(text))
    return (frame.with_columns(encoded) if encoded else frame), parts
