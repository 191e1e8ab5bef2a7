"""Typed gRPC clients for finscore's served models."""

from clients.errors import map_error
from clients.grpc import AsyncModelClient, ModelClient
from clients.tensors import InputSpec, columns_of, decode_outputs, encode_inputs

__all__ = ["AsyncModelClient", "InputSpec", "ModelClient", "columns_of", "decode_outputs", "encode_inputs", "map_error"]
