"""Feature kernels: pure Polars expressions and Numba kernels. Imports nothing from the project."""

from kernels.scaling import UNSEEN, one_hot, one_hot_names, robust_scaled, signed_log1p
from kernels.tabular import BOOLEAN_SPELLINGS, FALSE_WORDS, TRUE_WORDS, boolean, category_code, numeric, parse_number

__all__ = [
    "BOOLEAN_SPELLINGS",
    "FALSE_WORDS",
    "TRUE_WORDS",
    "UNSEEN",
    "boolean",
    "category_code",
    "numeric",
    "one_hot",
    "one_hot_names",
    "parse_number",
    "robust_scaled",
    "signed_log1p",
]
