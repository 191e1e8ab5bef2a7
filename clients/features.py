"""Sending a model's rows to its feature-tensor twin: encode them here, decode the answer to the raw model's.

A tabular model ``churn`` is served twice (see :mod:`engine.families.twin`): fed raw columns, and as
``churn_features``, fed one FP32 ``features`` tensor. A :class:`FeatureRoute` is what a client needs to use
the twin in the raw model's place, read from the twin's config: it checks and encodes raw rows with the
kernels training used (the raw model's checks and sentences, so a bad row fails here as it would there),
names the twin's outputs for the raw outputs asked for, and turns the twin's INT32 indices back into the raw
model's names. What a caller sees is what the raw model answers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clients.errors import rejected
from clients.tensors import Codes
from engine.errors import InvalidInputError, ServerError
from engine.families.twin import ENCODINGS, INPUT, twin_name

if TYPE_CHECKING:
    from engine.families.twin import TableEncoder

__all__ = ["FeatureRoute", "can_encode"]


def can_encode() -> bool:
    """Whether this installation has what encoding rows needs (Polars: ``finscore[backend]``); a client-only
    install sends raw columns."""
    return importlib.util.find_spec("polars") is not None


@dataclass(frozen=True)
class FeatureRoute:
    """How rows for ``raw`` travel through its twin ``model``."""

    raw: str
    model: str
    encoder: TableEncoder
    #: the twin's INT32 outputs and the raw model's text outputs they stand for
    codes: Codes

    @classmethod
    def from_parameters(cls, raw: str, parameters: Mapping[str, str]) -> FeatureRoute:
        """The route to ``raw``'s twin, from the twin's config parameters."""
        from engine.families.twin import TableEncoder
        from engine.tables.schema import TableSchema

        model = twin_name(raw)
        encoding = parameters.get("encoding", "")
        if encoding not in ENCODINGS:
            msg = f"model {model!r} asks for the feature encoding {encoding!r}, which this client does not know"
            raise ServerError(msg)
        try:
            schema = TableSchema.from_json(parameters["schema"])
            codes = Codes.from_parameter(parameters.get("decode", ""))
        except (KeyError, TypeError, ValueError):
            msg = f"model {model!r} publishes no readable schema in its config"
            raise ServerError(msg) from None
        return cls(raw, model, TableEncoder(schema, model=raw), codes)

    def encode(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The twin's request for raw ``[rows, 1]`` arrays (the raw model's checks: a fault is the error the
        raw model's refusal would be)."""
        try:
            return {INPUT: self.encoder.encode(arrays)}
        except InvalidInputError as exc:
            raise rejected(self.raw, str(exc)) from None

    def outputs(self, names: Sequence[str]) -> list[str]:
        """The twin's outputs for the raw outputs ``names``."""
        return self.codes.outputs(names)

    def decode(self, result: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The twin's answer as the raw model's: indices become names (bytes, as BYTES outputs arrive)."""
        return self.codes.decode(result)
