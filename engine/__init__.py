"""finscore's engine: schemas, training, scorers, the model-repository builder and the server launcher."""

from engine.grpc_env import lean_client

lean_client()  # before anything imports grpc: see engine.grpc_env

from engine.errors import (  # noqa: E402  (after lean_client, on purpose)
    DataFileError,
    FinscoreError,
    InvalidInputError,
    ModelNotReadyError,
    NotFoundError,
    PortInUseError,
    SchemaError,
    ServerError,
    ServerStartError,
    ServerUnavailableError,
    SharedMemoryUnavailableError,
    StateUnavailableError,
    UnsupportedOnGPU,
    UsageError,
)

__all__ = [
    "DataFileError",
    "FinscoreError",
    "InvalidInputError",
    "ModelNotReadyError",
    "NotFoundError",
    "PortInUseError",
    "SchemaError",
    "StateUnavailableError",
    "ServerError",
    "ServerStartError",
    "ServerUnavailableError",
    "SharedMemoryUnavailableError",
    "UnsupportedOnGPU",
    "UsageError",
]
