"""Triton ``config.pbtxt`` from a typed description: the one function every model's config comes from."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ModelConfig", "TensorSpec", "render_config"]

Datatype = Literal["FP32", "FP64", "INT64", "INT32", "BOOL", "BYTES"]
# BYTES on the wire is TYPE_STRING in a config (TYPE_BYTES does not exist and stops the server).
_CONFIG_TYPE = {
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "INT64": "TYPE_INT64",
    "INT32": "TYPE_INT32",
    "BOOL": "TYPE_BOOL",
    "BYTES": "TYPE_STRING",
}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor per row: name, wire datatype and dims without the batch dimension."""

    name: str
    datatype: Datatype
    dims: tuple[int, ...] = (1,)
    #: An input a request may leave out (the model decides what a request without it means).
    optional: bool = False


@dataclass(frozen=True)
class ModelConfig:
    name: str
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    max_batch_size: int = 4096
    backend: str = "python"
    instance_kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    instance_count: int = 1
    dynamic_batching: bool = True
    # Measured here: a queue delay of 0 served best at every concurrency.
    max_queue_delay_us: int = 0
    parameters: Mapping[str, str] = field(default_factory=dict)


def _quote(text: str) -> str:
    return json.dumps(text)  # protobuf text format accepts JSON-style escaped strings


def _tensor(spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.dims)
    optional = " optional: true" if spec.optional else ""
    return f"  {{ name: {_quote(spec.name)} data_type: {_CONFIG_TYPE[spec.datatype]} dims: [ {dims} ]{optional} }}"


def render_config(cfg: ModelConfig) -> str:
    """The ``config.pbtxt`` text for ``cfg``.

    >>> print(render_config(ModelConfig("m", [TensorSpec("x", "FP32")], [TensorSpec("y", "BYTES", (3,))])))
    ... # doctest: +ELLIPSIS
    name: "m"
    backend: "python"
    max_batch_size: 4096
    input [
      { name: "x" data_type: TYPE_FP32 dims: [ 1 ] }
    ]
    output [
      { name: "y" data_type: TYPE_STRING dims: [ 3 ] }
    ]
    ...
    """
    if not cfg.inputs or not cfg.outputs:
        msg = f"model {cfg.name!r} needs at least one input and one output"
        raise ValueError(msg)
    lines = [
        f"name: {_quote(cfg.name)}",
        f"backend: {_quote(cfg.backend)}",
        f"max_batch_size: {cfg.max_batch_size}",
        "input [",
        ",\n".join(_tensor(t) for t in cfg.inputs),
        "]",
        "output [",
        ",\n".join(_tensor(t) for t in cfg.outputs),
        "]",
        f"instance_group [ {{ count: {cfg.instance_count} kind: {cfg.instance_kind} }} ]",
    ]
    if cfg.dynamic_batching:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {cfg.max_queue_delay_us} }}")
    for key, value in sorted(cfg.parameters.items()):
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"
