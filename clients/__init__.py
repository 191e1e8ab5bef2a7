"""Typed gRPC clients for finscore's served models."""

import engine  # noqa: F401  (first: it sets gRPC's client up before grpc is imported, see engine.grpc_env)
from clients.errors import map_error
from clients.fraud import FraudClient
from clients.grpc import AsyncModelClient, ModelClient
from clients.recommender import Recommendation, RecommenderClient
from clients.shm import SharedMemoryModelClient, SharedMemoryUnavailableError, bulk_client, is_local
from clients.tensors import InputSpec, columns_of, decode_outputs, encode_inputs
from clients.tls import Tls

__all__ = [
    "AsyncModelClient",
    "FraudClient",
    "InputSpec",
    "ModelClient",
    "Recommendation",
    "RecommenderClient",
    "SharedMemoryModelClient",
    "SharedMemoryUnavailableError",
    "Tls",
    "bulk_client",
    "columns_of",
    "decode_outputs",
    "encode_inputs",
    "is_local",
    "map_error",
]
