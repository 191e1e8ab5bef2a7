"""``finscore reload MODEL...``: make a running server serve the newest version of a model in its repository.

``finscore serve`` runs Triton with explicit model control (:mod:`engine.serving.server`): the server loads a
model when asked and never looks at the repository on its own, so a version that ``finscore train`` writes is
served only once someone asks again. Asking is Triton's load request for the model: the configs training writes
keep Triton's default version policy (the latest version), so loading again serves the newest version folder.
Triton keeps answering with the version it has until the new one is ready, and keeps it when the new one fails
to load; the command reads the model's ready state afterwards rather than trusting the load call alone.

``finscore train ... --load URL`` calls :func:`reload_model` with the models training wrote.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.cli.common import Subparsers, add_client_tls, client_tls
from engine.errors import ModelNotReadyError, NotFoundError
from engine.settings import resolve_settings

if TYPE_CHECKING:
    from clients.tls import Tls

__all__ = ["Reloaded", "add_parsers", "reload_command", "reload_model", "reload_models"]


def add_parsers(sub: Subparsers) -> None:
    p = sub.add_parser("reload", help="make a running server load the newest version of models from its repository")
    p.add_argument(
        "models", nargs="+", metavar="MODEL", help="served model names, e.g. churn, or threat threat_features"
    )
    p.add_argument("--url", help="server gRPC address HOST:PORT (default 127.0.0.1:8001)")
    add_client_tls(p)
    p.set_defaults(func=reload_command)


@dataclass(frozen=True)
class Reloaded:
    """A model the server has loaded again: the version it serves now, and the one it served before ("" none)."""

    model: str
    version: str
    before: str
    url: str

    def line(self) -> str:
        if not self.before:
            was = "it was not loaded"
        elif self.before == self.version:
            was = "the version it served before"
        else:
            was = f"was version {self.before}"
        return f"{self.model} version {self.version} is ready at {self.url} ({was})"


def reload_command(args: argparse.Namespace) -> int:
    url = resolve_settings(url=args.url).url
    for reloaded in reload_models(url, args.models, tls=client_tls(args)):
        print(reloaded.line())
    return 0


def reload_models(url: str, models: list[str], *, tls: Tls | None = None) -> list[Reloaded]:
    """:func:`reload_model` for each of ``models`` and, right after it, its feature-tensor twin where the server's
    repository has one (``churn`` then ``churn_features``): a twin serving an older version than its raw model
    would answer clients that encode with the old model."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from clients.errors import map_error
    from engine.families.twin import twin_name

    client = grpcclient.InferenceServerClient(url=url, **(tls.client_kwargs() if tls else {}))
    try:
        index = {m["name"] for m in client.get_model_repository_index(as_json=True).get("models", [])}
    except InferenceServerException as exc:
        raise map_error(exc, url=url, model=models[0], tls=tls is not None) from None
    finally:
        client.close()
    order = [name for model in models for name in (model, twin_name(model)) if name == model or name in index]
    return [reload_model(url, name, tls=tls) for name in dict.fromkeys(order)]


def reload_model(url: str, model: str, *, tls: Tls | None = None) -> Reloaded:
    """Ask the server at ``url`` to load ``model`` again (its newest version) and wait until it has.

    Raises
    ------
    ServerUnavailableError
        No server answers at ``url`` (or TLS with it failed: :class:`~engine.errors.ServerError`).
    NotFoundError
        The server's repository has no folder ``model``.
    ModelNotReadyError
        The load failed (Triton's reason; the server keeps the version it had), or no version is ready after it.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from clients.errors import map_error

    client = grpcclient.InferenceServerClient(url=url, **(tls.client_kwargs() if tls else {}))
    try:
        index = client.get_model_repository_index(as_json=True)
        names = sorted({m["name"] for m in index.get("models", [])})
        if model not in names:
            has = ", ".join(names) or "no model"
            msg = f"model {model!r} is not in the repository of the server at {url} (it has: {has})"
            raise NotFoundError(msg)
        before = _served(client, model)
        try:
            # No client timeout: a model takes as long as it takes to load (a recommender's index, a fraud state).
            client.load_model(model)
        except InferenceServerException as exc:
            if "UNAVAILABLE" in str(exc.status() or ""):  # the connection failed, not the model
                raise
            kept = _served(client, model)
            still = f"; it still serves version {kept}" if kept else ""
            msg = f"the server at {url} could not load model {model!r}: {_reason(exc, model)}{still}"
            raise ModelNotReadyError(msg) from None
        version = _served(client, model)
    except InferenceServerException as exc:
        raise map_error(exc, url=url, model=model, tls=tls is not None) from None
    finally:
        client.close()
    if not version:
        msg = f"the server at {url} loaded model {model!r} but reports no version of it ready"
        raise ModelNotReadyError(msg)
    return Reloaded(model=model, version=version, before=before, url=url)


def _served(client: Any, model: str) -> str:
    """The newest version of ``model`` the server has ready (what an unversioned request runs), or ""."""
    if not client.is_model_ready(model):
        return ""
    versions = client.get_model_metadata(model, as_json=True).get("versions", [])
    ready = [v for v in versions if client.is_model_ready(model, v)]
    return max(ready, key=int) if ready else ""


def _reason(exc: Any, model: str) -> str:
    """Triton's reason for a failed load, without its "load failed for model" prefix and the backend's stack
    trace (which follows the model's own sentence after a blank line)."""
    text = (exc.message() or str(exc)).strip()
    text = text.removeprefix(f"load failed for model '{model}': ")
    return text.split("\n")[0].strip().rstrip(".;") or "no reason given"
