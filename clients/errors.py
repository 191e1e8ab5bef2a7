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

__all__ = ["gave_up", "map_error", "rejected", "retry_reason"]


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


def rejected(model: str, message: str) -> InvalidInputError:
    """The error of a request ``model`` refuses: the same sentence whether the server or the client (encoding
    rows for a feature-tensor twin) found the fault."""
    return InvalidInputError(f"model {model!r} rejected the request: {message}")


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
        return rejected(model, message)
    if "NOT_FOUND" in status:
        return NotFoundError(f"model {model!r} is not served at {url}: {message}")
    if "UNAVAILABLE" in status:
        return ModelNotReadyError(f"model {model!r} is not ready at {url}: {message}")
    if "DEADLINE_EXCEEDED" in status:
        return ServerError(f"model {model!r} at {url} did not answer in time")
    return ServerError(f"model {model!r} at {url} failed: {message or status}")


def retry_reason(exc: InferenceServerException, *, seen: bool) -> str | None:
    """Why a failed call may succeed if made again, or None when it would fail the same way.

    Each case is one where the request never reached the model, so sending it again cannot apply it twice (a
    fraud authorization's state update included): no server answering (stopped, restarting), a model's
    python-backend stub that died (until the server reloads it), and a model not loaded at this moment (being
    reloaded). Only for a client that has already talked to the model (``seen``): a server down or a model name
    not found at the first call is a mistake to report at once, not a fault to wait out."""
    if not seen:
        return None
    status = str(exc.status() or "")
    message = (exc.message() or str(exc)).strip()
    text = message.lower()
    if "handshake" in text or "ssl" in text:
        return None  # TLS misconfigured: retrying changes nothing
    if "UNAVAILABLE" in status and ("connect" in text or "socket" in text or not message):
        return "no server answers"
    if "is not healthy" in text:
        return "the model's python-backend stub died and the server is reloading it"
    if "unknown model" in text:
        return "the model is not loaded (it is being reloaded, or was unloaded)"
    if "UNAVAILABLE" in status:
        return "the model is not ready"
    return None


def gave_up(
    exc: InferenceServerException, reason: str, *, seconds: float, url: str, model: str, tls: bool = False
) -> FinscoreError:
    """The error once retries of a call to ``model`` at ``url`` ran out after ``seconds``: what happened last."""
    last = map_error(exc, url=url, model=model, tls=tls)
    if reason == "no server answers":
        msg = f"the server at {url} went away and did not come back within {seconds:g} s (connection refused)"
        return ServerUnavailableError(msg)
    msg = f"model {model!r} at {url} did not come back within {seconds:g} s: {reason} ({last})"
    return ModelNotReadyError(msg)
