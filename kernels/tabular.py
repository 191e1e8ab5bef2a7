"""Feature kernels for customer tables, written once as Polars expressions.

The same expressions run on the CPU and, through ``collect(engine=pl.GPUEngine())``, on the GPU with
cuDF. Each function returns a ``pl.Expr`` named after its source column, so a model's features keep the
names of the raw columns they come from (that is what reason codes report).

>>> import polars as pl
>>> df = pl.DataFrame({"plan": ["gold", "basic", "platinum", None], "fee": [1.0, float("nan"), 3.0, None]})
>>> df.select(category_code("plan", ["basic", "gold"]), numeric("fee")).rows()
[(1.0, 1.0), (0.0, None), (None, 3.0), (None, None)]
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

__all__ = ["BOOLEAN_SPELLINGS", "FALSE_WORDS", "TRUE_WORDS", "boolean", "category_code", "numeric", "parse_number"]

#: Words read as true / false in yes-no columns (compared in lower case, trimmed).
TRUE_WORDS = ("yes", "y", "true", "t", "1")
FALSE_WORDS = ("no", "n", "false", "f", "0")


def numeric(name: str) -> pl.Expr:
    """The column as Float32, with NaN read as missing (XGBoost's missing is null/NaN alike).

    >>> pl.DataFrame({"x": [1, 2]}).select(numeric("x")).dtypes
    [Float32]
    """
    x = pl.col(name).cast(pl.Float32)
    # when/then costs a third of fill_nan(None) per call, which matters for one-row requests.
    return pl.when(x.is_nan()).then(None).otherwise(x).alias(name)


def parse_number(name: str) -> pl.Expr:
    """A text column parsed as Float64; blanks and unparseable text become null.

    >>> pl.DataFrame({"x": [" 1.5", " ", "n/a"]}).select(parse_number("x")).to_series().to_list()
    [1.5, None, None]
    """
    return pl.col(name).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False).alias(name)


def _spellings(words: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(v for w in words for v in (w, w.capitalize(), w.upper())))


#: The exact spellings read as yes/no: each word in lower case, Capitalised and UPPER case.
BOOLEAN_SPELLINGS = (*_spellings(TRUE_WORDS), *_spellings(FALSE_WORDS))
_N_TRUE = len(_spellings(TRUE_WORDS))
# An Enum cast is a lookup in a fixed dictionary: a tenth of the cost of replace_strict or of trimming and
# lower-casing, per call, which is what a one-row request pays.
_BOOLEAN = pl.Enum(list(BOOLEAN_SPELLINGS))


def boolean(name: str) -> pl.Expr:
    """A yes/no column (text or Boolean) as 1.0 / 0.0; any other spelling is missing.

    >>> pl.DataFrame({"x": ["Yes", "no", "TRUE", "maybe", " yes"]}).select(boolean("x")).to_series().to_list()
    [1.0, 0.0, 1.0, None, None]
    """
    code = pl.col(name).cast(pl.String).cast(_BOOLEAN, strict=False).to_physical()
    return (code < _N_TRUE).cast(pl.Float32).alias(name)


def category_code(name: str, vocabulary: Sequence[str]) -> pl.Expr:
    """The position of each value in ``vocabulary`` as Float32; unseen values and nulls are missing.

    XGBoost reads these codes as a categorical feature; an unseen category is scored as missing.
    ``vocabulary`` holds distinct, non-empty strings.
    """
    return (
        pl.col(name).cast(pl.String).cast(pl.Enum(list(vocabulary)), strict=False).to_physical().cast(pl.Float32)
    ).alias(name)
