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


def _tls_error(message: str, *, url: str, tls: bool) -> FinscoreError | None:
    """A sentence for a connection that TLS (or its absence) broke; None when the failure is something else."""
    text = message.lower()
    if "handshake" in text and "certificate_verify_failed" in text.replace(" ", "_"):
        return ServerError(f"TLS with {url} failed: the server's certificate is not signed by the CA given (--tls-ca)")
    if "handshake" in text or "ssl" in text:
        detail = message.split(": ")[-1].strip()
        if detail.upper() in {"", "OK"}:  # gRPC's own status text, which says nothing about the handshake
            detail = "the handshake was refused (does the server speak TLS, with this certificate?)"
        return ServerError(f"TLS with {url} failed: {detail}")
    if "socket closed" in text:
        if tls:
            return ServerError(
                f"TLS with {url} failed: the server closed the connection (it wants a client certificate signed by "
                "its CA: --tls-cert and --tls-key, or it does not speak TLS)"
            )
        return ServerError(f"the server at {url} closed the connection: it may require TLS (--tls-ca)")
    return None


def map_error(exc: InferenceServerException, *, url: str, model: str, tls: bool = False) -> FinscoreError:
    """A domain error with one sentence for ``exc`` (raised by a call to ``model`` at ``url``; ``tls``: whether
    the client spoke TLS)."""
    status = str(exc.status() or "")
    message = (exc.message() or str(exc)).strip()
    if "UNAVAILABLE" in status:
        broken = _tls_error(message, url=url, tls=tls)
        if broken is not None:
            return broken
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
