"""Feature kernels: pure Polars expressions and Numba kernels. Imports nothing from the project."""

from kernels.tabular import FALSE_WORDS, TRUE_WORDS, boolean, category_code, numeric, parse_number

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "boolean", "category_code", "numeric", "parse_number"]
