"""Feature kernels: pure Polars expressions and Numba kernels. Imports nothing from the project."""

from kernels.tabular import BOOLEAN_SPELLINGS, FALSE_WORDS, TRUE_WORDS, boolean, category_code, numeric, parse_number

__all__ = ["BOOLEAN_SPELLINGS", "FALSE_WORDS", "TRUE_WORDS", "boolean", "category_code", "numeric", "parse_number"]
