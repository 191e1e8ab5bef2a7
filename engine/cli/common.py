"""Flags several commands share (``--repo``, client TLS, output protection, the progress bar), the checks of their
values, and the plain-text tables commands print.

Kept in one module so a flag means the same, with the same help, in every command that takes it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.errors import UsageError

__all__ = [
    "ENTITY",
    "Parser",
    "Subparsers",
    "add_client_tls",
    "add_output_protection",
    "add_progress",
    "add_repo",
    "check_request_rows",
    "client_tls",
    "output_guard",
    "positive_int",
    "show_progress",
    "text_table",
]

Subparsers = argparse._SubParsersAction  # what ``add_subparsers`` returns


class Parser(argparse.ArgumentParser):
    """The parser of ``finscore`` and of each of its commands: arguments may be added when the parser is first
    used (:meth:`defer`), so flags read from a heavy module (the recommender's profile fields: ~0.4 s of imports)
    cost the other commands nothing, and a failure to import it stays inside the one command that needs it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Call ``add(self)`` before this parser parses or prints its help, once."""
        self._deferred.append(add)

    def _add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()


#: ``--entity`` of auth logs: windows per source address or per user.
ENTITY = {"ip": "source_ip", "user": "user"}


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1 (argparse says so and exits 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a whole number of at least 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def add_repo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo", type=Path, help="model repository folder (default: model_repo/ of the source tree, or FINSCORE_REPO)"
    )


def add_client_tls(p: argparse._ActionsContainer) -> None:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key`` of a command that calls a server; :func:`client_tls` reads them."""
    p.add_argument("--tls-ca", type=Path, help="gRPC over TLS: the CA (PEM) that signed the server's certificate")
    p.add_argument("--tls-cert", type=Path, help="mutual TLS: this client's certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="mutual TLS: this client's private key (PEM)")


def client_tls(args: argparse.Namespace) -> Any:
    """The :class:`clients.tls.Tls` of :func:`add_client_tls`'s flags, or None (plaintext gRPC)."""
    from clients.tls import Tls

    return Tls.from_files(args.tls_ca, args.tls_cert, args.tls_key)


def add_output_protection(p: argparse._ActionsContainer, columns: str) -> None:
    p.add_argument(
        "--tokenize", action="append", default=[], metavar="COL", help=f"write {columns} as keyed tokens (repeatable)"
    )
    p.add_argument(
        "--encrypt", action="append", default=[], metavar="COL", help=f"write {columns} encrypted (AES-GCM; repeatable)"
    )
    p.add_argument(
        "--keys", type=Path, metavar="FILE", help="key file for --tokenize/--encrypt (or FINSCORE_PROTECT_KEYS)"
    )


def add_progress(p: argparse._ActionsContainer) -> None:
    """``--progress`` and ``--no-progress`` of a command that draws a progress bar; :func:`show_progress` reads
    them."""
    choice = p.add_mutually_exclusive_group()
    choice.add_argument(
        "--progress", action="store_true", default=None, help="draw the progress bar (default: only on a terminal)"
    )
    choice.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw the progress bar: as ``--progress``/``--no-progress`` say, else only when stderr is a
    terminal. A bar redrawn with carriage returns is unreadable in a log file or a pipe, and it would be
    the first thing there, before the command's own lines."""
    if args.progress is not None:
        return bool(args.progress)
    return sys.stderr is not None and sys.stderr.isatty()


def output_guard(args: argparse.Namespace, carried: Sequence[str], subject: Sequence[str], trail: Any) -> Any:
    """The output guard of ``score``/``scan``: card numbers masked always, columns tokenized or encrypted."""
    from engine.security.guard import OutputGuard
    from engine.security.protect import KeyRing

    keys = KeyRing.from_env_or_file(args.keys) if args.tokenize or args.encrypt else None
    return OutputGuard.build(
        carried,
        tokenize=args.tokenize,
        encrypt=args.encrypt,
        keys=keys,
        subject=subject,
        pseudonym_key=trail.pseudonym_key,
    )


def check_request_rows(rows: int, limit: int, whose: str) -> None:
    """``--request-rows`` within ``1..limit``, the max batch size of the served model (``whose``: "the model's")."""
    if not 1 <= rows <= limit:
        msg = f"--request-rows must be between 1 and {limit} ({whose} max batch size)"
        raise UsageError(msg)


def text_table(rows: Iterable[Sequence[object]], header: Sequence[str]) -> str:
    """``rows`` under ``header`` in left-aligned columns, a rule of dashes between (no trailing blanks)."""
    lines = [tuple(str(v) for v in r) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    lines.insert(1, tuple("-" * w for w in widths))
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in lines)
