"""TLS for the gRPC clients: the CA that signed the server's certificate, and for mutual TLS the client's own
certificate and key (PEM files, as ``finscore serve --tls-cert --tls-key [--tls-ca]`` takes for the server).

>>> Tls.from_files(None, None, None) is None
True
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidInputError

__all__ = ["Tls", "add_tls_arguments"]


def add_tls_arguments(p: argparse.ArgumentParser) -> None:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key`` of a command that calls a server; :meth:`Tls.from_files` reads
    them."""
    p.add_argument("--tls-ca", type=Path, help="gRPC over TLS: the CA (PEM) that signed the server's certificate")
    p.add_argument("--tls-cert", type=Path, help="mutual TLS: this client's certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="mutual TLS: this client's private key (PEM)")


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
