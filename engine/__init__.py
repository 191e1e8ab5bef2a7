"""finscore's engine: schemas, training, scorers, the model-repository builder and the server launcher."""

from engine.errors import (
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
    UnsupportedOnGPU,
)

__all__ = [
    "DataFileError",
    "FinscoreError",
    "InvalidInputError",
    "ModelNotReadyError",
    "NotFoundError",
    "PortInUseError",
    "SchemaError",
    "ServerError",
    "ServerStartError",
    "ServerUnavailableError",
    "UnsupportedOnGPU",
]
