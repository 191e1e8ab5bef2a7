"""Turning a dict, a Polars or pandas DataFrame, or an Arrow table into per-input arrays, and back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from engine.errors import InvalidInputError
from engine.families.twin import decode_indices

__all__ = ["Codes", "InputSpec", "columns_of", "decode_outputs", "encode_inputs", "typed_column"]


@dataclass(frozen=True)
class InputSpec:
    name: str
    datatype: str
    #: The model takes requests without it (``optional: true`` in its config): left out when the data lacks it.
    optional: bool = False


def columns_of(data: Any) -> dict[str, Any]:
    """Columns by name from a mapping (of scalars or sequences), Polars/pandas DataFrame, or Arrow table."""
    if isinstance(data, Mapping):
        return dict(data)
    module = type(data).__module__.split(".")[0]
    if module == "polars":
        return {name: data.get_column(name).to_list() for name in data.columns}
    if module == "pandas":
        return {name: data[name].to_numpy() for name in data.columns}
    if module == "pyarrow":
        return {name: data.column(name).to_pylist() for name in data.schema.names}
    msg = f"cannot score a {type(data).__name__}: pass a dict, a Polars or pandas DataFrame, or an Arrow table"
    raise InvalidInputError(msg)


def _rows(name: str, value: Any) -> list[Any] | np.ndarray:
    if isinstance(value, np.ndarray):
        return value.reshape(-1) if value.ndim == 2 and value.shape[1] == 1 else value
    if isinstance(value, (str, bytes, int, float)) or value is None:
        return [value]
    return list(value)


def _fp32(name: str, values: list[Any] | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float32)
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float32)
    except (TypeError, ValueError):
        msg = f"column {name!r} must hold numbers (or None for missing)"
        raise InvalidInputError(msg) from None


def _bytes(name: str, values: list[Any] | np.ndarray) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[i] = b""
        elif isinstance(v, bytes):
            out[i] = v
        else:
            out[i] = str(v).encode("utf-8")
    return out


def _numeric(spec: InputSpec, values: list[Any] | np.ndarray) -> np.ndarray:
    dtype = triton_to_np_dtype(spec.datatype)
    if dtype is None or dtype is object:
        msg = f"input {spec.name!r} has datatype {spec.datatype}, which the client cannot encode"
        raise InvalidInputError(msg)
    try:
        return np.asarray(values).astype(dtype)
    except (TypeError, ValueError):
        msg = f"column {spec.name!r} cannot be read as {spec.datatype}"
        raise InvalidInputError(msg) from None


def encode_inputs(data: Any, specs: list[InputSpec], *, model: str) -> dict[str, np.ndarray]:
    """Arrays shaped ``[rows, 1]`` for each input of the model, in the model's datatypes; an optional input the
    data lacks is left out."""
    columns = columns_of(data)
    specs = [s for s in specs if s.name in columns or not s.optional]
    missing = [s.name for s in specs if s.name not in columns]
    if missing:
        msg = f"model {model!r} needs column {missing[0]!r}, which the data lacks ({len(missing)} missing)"
        raise InvalidInputError(msg)
    arrays: dict[str, np.ndarray] = {}
    n = None
    for spec in specs:
        values = _rows(spec.name, columns[spec.name])
        if spec.datatype == "BYTES":
            arr = _bytes(spec.name, values)
        elif spec.datatype == "FP32":
            arr = _fp32(spec.name, values)
        else:
            arr = _numeric(spec, values)
        if n is not None and len(arr) != n:
            msg = f"column {spec.name!r} has {len(arr)} rows but the others have {n}"
            raise InvalidInputError(msg)
        n = len(arr)
        arrays[spec.name] = arr.reshape(-1, 1)
    if not n:
        msg = "there are no rows to score"
        raise InvalidInputError(msg)
    return arrays


def decode_outputs(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BYTES outputs as str; ``[rows, 1]`` outputs flattened to ``[rows]``."""
    decoded = {}
    for name, arr in outputs.items():
        if arr.dtype == object:
            flat = [b.decode("utf-8") if isinstance(b, bytes) else b for b in arr.ravel().tolist()]
            text = np.empty(len(flat), dtype=object)  # filled, not np.array(flat): that would nest lists
            text[:] = flat
            arr = text.reshape(arr.shape)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        decoded[name] = arr
    return decoded


def typed_column(name: str, values: Any, datatype: str) -> np.ndarray:
    """One input's values (a scalar or a sequence) as the ``[rows, 1]`` array of its Triton ``datatype``."""
    seq = values if isinstance(values, (list, tuple, np.ndarray)) else [values]
    if datatype == "BYTES":
        return np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in seq], dtype=object).reshape(
            -1, 1
        )
    try:
        return np.asarray(seq, dtype=triton_to_np_dtype(datatype)).reshape(-1, 1)
    except (TypeError, ValueError):
        msg = f"column {name!r} cannot be read as {datatype}"
        raise InvalidInputError(msg) from None


@dataclass(frozen=True)
class Codes:
    """INT32 outputs a model answers in place of text outputs, from its config's ``decode`` parameter
    (:func:`engine.families.twin.decode_parameter`): each value is the index into a list of names, -1 for none.
    Asked for instead of the text, and read back as the text: the caller sees the text outputs."""

    #: INT32 output -> (the text output it stands for, the names its values index, as bytes: BYTES arrive so)
    decoding: Mapping[str, tuple[str, tuple[bytes, ...]]]

    @classmethod
    def from_parameter(cls, text: str, *, outputs: Sequence[str] | None = None) -> Codes:
        """Read the ``decode`` parameter (JSON); with ``outputs``, only the codes whose INT32 and text outputs are
        both among them. Raises ``ValueError`` when the text is not that parameter."""
        try:
            decode = json.loads(text or "{}")
            decoding = {
                str(out): (str(raw), tuple(str(n).encode("utf-8") for n in names))
                for out, (raw, names) in decode.items()
            }
        except (AttributeError, TypeError, ValueError):
            msg = "not a decode parameter: JSON {INT32 output: [text output, [names...]]} was expected"
            raise ValueError(msg) from None
        if outputs is not None:
            decoding = {out: v for out, v in decoding.items() if out in outputs and v[0] in outputs}
        return cls(decoding)

    def outputs(self, names: Sequence[str]) -> list[str]:
        """The outputs to ask for in place of ``names``: each text output's INT32 code where there is one."""
        instead = {raw: out for out, (raw, _) in self.decoding.items()}
        return [instead.get(name, name) for name in names]

    def decode(self, result: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``result`` with each INT32 code read back as its text output (bytes, as a BYTES output arrives)."""
        out: dict[str, np.ndarray] = {}
        for name, arr in result.items():
            if name in self.decoding:
                raw, names = self.decoding[name]
                out[raw] = decode_indices(arr, names, empty=b"")
            else:
                out[name] = arr
        return out
