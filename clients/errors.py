"""The one place where tritonclient's exceptions become finscore's domain errors."""

from __future__ import annotations

from tritonclient.utils import InferenceServerException

from engine.errors import (
    FinscoreError,
    InvalidInputError,
    ModelNotReadyError,
    NotFoundError,
    ServerError,
    ServerUnavailableError,
)

__all__ = ["map_error"]


def map_error(exc: InferenceServerException, *, url: str, model: str) -> FinscoreError:
    """A domain error with one sentence for ``exc`` (raised by a call to ``model`` at ``url``)."""
    status = str(exc.status() or "")
    message = (exc.message() or str(exc)).strip()
    if "UNAVAILABLE" in status and ("connect" in message.lower() or "socket" in message.lower() or not message):
        return ServerUnavailableError(f"no Triton server answers at {url}: start one with `finscore serve`")
    if "INVALID_ARGUMENT" in status:
        return InvalidInputError(f"model {model!r} rejected the request: {message}")
    if "NOT_FOUND" in status:
        return NotFoundError(f"model {model!r} is not served at {url}: {message}")
    if "UNAVAILABLE" in status:
        return ModelNotReadyError(f"model {model!r} is not ready at {url}: {message}")
    if "DEADLINE_EXCEEDED" in status:
        return ServerError(f"model {model!r} at {url} did not answer in time")
    return ServerError(f"model {model!r} at {url} failed: {message or status}")
