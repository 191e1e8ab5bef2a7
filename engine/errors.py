"""The errors finscore raises, in one place.

::

    FinscoreError                      every error a user can cause or meet
    ├── InvalidInputError              bad request or bad data: a field, its type, shape or value
    │   ├── DataFileError              a file that cannot be read, or lacks a column
    │   └── SchemaError                a table finscore cannot learn a schema from
    ├── NotFoundError                  a model, version or artifact that does not exist
    ├── ModelNotReadyError             the model exists but is not trained or not loaded
    ├── UnsupportedOnGPU               a GPU path asked for on a machine that cannot run it
    ├── StateUnavailableError          the store of a stateful model (Redis) does not answer
    ├── UsageError                     a command used wrongly: a flag or setting out of range (exit 2)
    └── ServerError                    the Triton server process
        ├── PortInUseError             a port the server needs is taken
        ├── ServerStartError           the server exited or never became ready (with its own reason)
        ├── ServerUnavailableError     no server answers at the address
        └── SharedMemoryUnavailableError  no shared memory with a server on this host (plain gRPC still works)

Messages name the field, what was expected and what came, never a raw personal value.
"""

from __future__ import annotations

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


class FinscoreError(Exception):
    """Base of every finscore error; its message is one sentence for the user."""


class InvalidInputError(FinscoreError):
    """A request or a data set is not what the model expects."""


class DataFileError(InvalidInputError):
    """A data file cannot be read or lacks what the command needs."""


class SchemaError(InvalidInputError):
    """A table from which no usable schema can be inferred."""


class NotFoundError(FinscoreError):
    """A model, model version or artifact that does not exist."""


class ModelNotReadyError(FinscoreError):
    """A model that exists but is not trained, or not loaded by the server."""


class UnsupportedOnGPU(FinscoreError):
    """A GPU path that cannot run here (no device, or a library missing)."""


class StateUnavailableError(FinscoreError):
    """The shared state store of a stateful model does not answer (Triton: UNAVAILABLE, worth a retry)."""


class UsageError(FinscoreError):
    """A command, flag or ``FINSCORE_*`` setting used wrongly; the CLI exits 2 for it, as for argparse's errors."""


class ServerError(FinscoreError):
    """Something about the Triton server process."""


class PortInUseError(ServerError):
    """A port the server must bind is already taken."""


class ServerStartError(ServerError):
    """The server exited during start-up or did not become ready in time."""


class ServerUnavailableError(ServerError):
    """No server answers at the given address."""


class SharedMemoryUnavailableError(ServerError):
    """Shared memory cannot be used between this client and the server (plain gRPC still works)."""
