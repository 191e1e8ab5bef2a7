"""TLS for the gRPC clients: the CA that signed the server's certificate, and for mutual TLS the client's own
certificate and key (PEM files, as ``finscore serve --tls-cert --tls-key [--tls-ca]`` takes for the server;
the commands that call a server take ``--tls-ca --tls-cert --tls-key``, see :mod:`engine.cli.common`).

>>> Tls.from_files(None, None, None) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidInputError

__all__ = ["Tls"]


def _file(path: str | Path | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        msg = f"{what} {p} is not a readable file"
        raise InvalidInputError(msg)
    return p


@dataclass(frozen=True)
class Tls:
    """How a client reaches a server over TLS. ``ca`` None trusts the system's roots."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def from_files(
        cls, ca: str | Path | None, cert: str | Path | None = None, key: str | Path | None = None
    ) -> Tls | None:
        """A :class:`Tls`, or None when no file is given (plaintext gRPC). Checks the files exist and that a
        client certificate comes with its key."""
        if ca is None and cert is None and key is None:
            return None
        if (cert is None) != (key is None):
            msg = "--tls-cert and --tls-key go together: a client certificate needs its private key"
            raise InvalidInputError(msg)
        return cls(_file(ca, "TLS CA certificate"), _file(cert, "TLS client certificate"), _file(key, "TLS key"))

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``tritonclient.grpc[.aio].InferenceServerClient``."""
        return {
            "ssl": True,
            "root_certificates": str(self.ca) if self.ca else None,
            "private_key": str(self.key) if self.key else None,
            "certificate_chain": str(self.cert) if self.cert else None,
        }
