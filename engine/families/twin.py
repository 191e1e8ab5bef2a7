"""The ``<model>_features`` twin of a tabular model: the same version, fed one FP32 feature tensor per request.

Text tensors are what costs most in Triton's python backend: every value becomes a Python object on both
sides, and a customer table is mostly text. A client that can compute the features (with the same kernels
as training) sends one ``features`` matrix ``[rows, width]`` instead, and reads numbers back: reason codes
and other names come back as INT32 indices into lists the twin's config publishes.

Training writes the twin beside the raw model, with the same version number and artifacts, so the two
always score alike (tests compare them). The twin's config parameters say everything a client needs:

- ``encoding``: how raw rows become features (:data:`ENCODINGS`: ``table`` is
  :meth:`engine.tables.schema.TableSchema.features`);
- ``schema``: the :class:`engine.tables.schema.TableSchema` as JSON;
- ``decode``: JSON ``{twin output: [raw output, [names...]]}``: an INT32 output of the twin is the index
  into ``names`` (-1 for none, read as the empty name) of the raw model's output of that name;
- ``raw_model``: the raw-column model it is the twin of.

The raw-column models stay, for clients that cannot encode (and for perf_analyzer's JSON input).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import InvalidInputError, SchemaError
from engine.serving.config import ModelConfig, TensorSpec

if TYPE_CHECKING:  # the names and parameters above are all a client-only install needs; the rest imports Polars
    from engine.serving.repository import ModelRepository
    from engine.tables.schema import TableSchema

__all__ = [
    "ENCODINGS",
    "INPUT",
    "SUFFIX",
    "FeatureCheck",
    "TableEncoder",
    "check_matrix",
    "decode_indices",
    "decode_parameter",
    "twin_input",
    "twin_name",
    "twin_parameters",
    "write_twin",
]

SUFFIX = "_features"
#: The twin's one input.
INPUT = "features"
#: The encodings a twin may name in its ``encoding`` parameter (the client knows these and no others).
ENCODINGS = ("table",)


def twin_name(model: str) -> str:
    """The name of ``model``'s feature-tensor twin."""
    return model + SUFFIX


def twin_input(width: int) -> TensorSpec:
    """The one FP32 input of a twin: a row of ``width`` features per request row."""
    return TensorSpec(INPUT, "FP32", (width,))


def twin_parameters(
    *, encoding: str, schema: TableSchema, decode: Mapping[str, tuple[str, Sequence[str]]], raw_model: str
) -> dict[str, str]:
    """The config parameters a client reads to encode rows for a twin and decode its answers."""
    if encoding not in ENCODINGS:
        msg = f"unknown feature encoding {encoding!r}; the encodings are {', '.join(ENCODINGS)}"
        raise SchemaError(msg)
    return {
        "encoding": encoding,
        "schema": schema.to_json(),
        "decode": decode_parameter(decode),
        "raw_model": raw_model,
    }


def decode_parameter(decode: Mapping[str, tuple[str, Sequence[str]]]) -> str:
    """The ``decode`` config parameter: JSON ``{INT32 output: [text output, [names...]]}``, each INT32 value the
    index into ``names`` (-1 for none) of the text output's value. A twin publishes it, and so does a model that
    answers numbers beside its text (``fraud``)."""
    return json.dumps({out: [raw, list(names)] for out, (raw, names) in decode.items()})


def write_twin(
    repo: ModelRepository, source: Path, config: ModelConfig, artifacts: Iterable[str], *, shell_of: str | None = None
) -> Path:
    """Copy ``artifacts`` of the raw model's version folder ``source`` into the next version of the twin
    ``config.name``, with the ``model.py`` shell of ``shell_of`` (default: the twin's own)."""
    writer = repo.new_version(config.name, shell_of=shell_of)
    for artifact in artifacts:
        shutil.copy2(source / artifact, writer.path / artifact)
    return writer.commit(config)


def decode_indices(indices: np.ndarray, names: Sequence[object], *, empty: object = "") -> np.ndarray:
    """INT32 indices into ``names`` as the names (an object array), ``empty`` for -1 (and any index outside
    the list)."""
    table = np.asarray([*names, empty], dtype=object)
    idx = np.asarray(indices)
    return table[np.where((idx >= 0) & (idx < len(names)), idx, len(names))]


def check_matrix(columns: Mapping[str, object], *, model: str, width: int) -> np.ndarray:
    """The ``features`` input of a request to ``model``, the only input: FP32 ``[rows, width]``."""
    unknown = [k for k in columns if k != INPUT]
    if unknown or INPUT not in columns:
        msg = f"model {model} takes one input, {INPUT!r} (got {', '.join(columns) or 'none'})"
        raise InvalidInputError(msg)
    x = np.asarray(columns[INPUT])
    if x.ndim != 2 or x.shape[1] != width or x.dtype != np.float32:
        msg = f"input {INPUT!r} must be FP32 [batch, {width}], got {x.dtype.name} {list(x.shape)}"
        raise InvalidInputError(msg)
    return x


class FeatureCheck:
    """The check of a table twin's ``features``, as :meth:`TableSchema.features` makes them: NaN for missing, no
    infinity, yes/no columns 0 or 1, category columns a code of the vocabulary. Anything else is one sentence
    naming the column and the row. Built once per schema: a request pays a few whole-matrix operations."""

    def __init__(self, schema: TableSchema, *, model: str) -> None:
        self.schema = schema
        self.model = model
        #: The count of codes of each column (yes/no, categories); 0 where numbers.
        self.codes = np.array(
            [len(c.vocabulary) if c.kind == "categorical" else 2 if c.kind == "boolean" else 0 for c in schema.columns],
            dtype=np.float32,
        )

    def __call__(self, columns: Mapping[str, object]) -> np.ndarray:
        from kernels.ranking import coded_fault

        x = check_matrix(columns, model=self.model, width=len(self.schema.columns))
        if not len(x):
            msg = "the request has no rows"
            raise InvalidInputError(msg)
        row, j, kind = coded_fault(x, self.codes)
        if kind == 1:
            name = self.schema.columns[j].name
            msg = f"input {INPUT!r} has an infinite value for {name!r} at row {row}; use NaN for missing"
            raise InvalidInputError(msg)
        if kind == 2:
            col = self.schema.columns[j]
            top = int(self.codes[j])
            what = f"a code 0-{top - 1} of its {top} categories" if col.kind == "categorical" else "0 or 1"
            msg = f"input {INPUT!r} has {float(x[row, j])!r} for {col.name!r} at row {row}, not {what} or NaN"
            raise InvalidInputError(msg)
        return x


class TableEncoder:
    """Raw columns of a table model → its feature matrix, with the same checks and kernels the raw model
    runs: memoised kernels for small batches on the CPU (:class:`OnlineFeatures`), Polars otherwise."""

    def __init__(self, schema: TableSchema, *, model: str, engine: object = "cpu", online: bool = True) -> None:
        from engine.tables.matrix import OnlineFeatures

        self.schema = schema
        self.model = model
        self.engine = engine
        self.exprs = schema.expressions(schema.wire_dtypes())
        self.online = OnlineFeatures(schema) if online else None

    @property
    def width(self) -> int:
        return len(self.schema.columns)

    def validate(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """A request's raw columns checked as the raw model checks them (its sentences)."""
        from engine.tables.checks import validate_columns

        return validate_columns(self.schema, columns, model=self.model)

    def features(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """The feature matrix (float32, rows × columns, NaN for missing) of validated rows."""
        from engine.tables.matrix import polars_matrix

        n = len(rows[self.schema.columns[0].name])
        if self.online is not None and n <= self.online.max_rows:
            return self.online.matrix(rows)
        return polars_matrix(self.schema, self.exprs, rows, engine=self.engine)

    def encode(self, columns: Mapping[str, object]) -> np.ndarray:
        """Raw request columns (``[rows, 1]`` arrays or 1-D) → the twin's ``features`` input."""
        return self.features(self.validate(columns))
