"""The image's command: NVIDIA's own ``tritonserver`` on a finscore model repository, kept as ``finscore serve``
keeps the bundled one.

``finscore serve`` cannot run here: it starts the ``tritonserver`` of the nvidia-pytriton wheel
(:func:`engine.serving.server.triton_paths`) with a backend folder made from that wheel's python-backend stubs,
and takes no other binary. In NVIDIA's container the server of the same release (2.51) is already there, built
with CUDA, with a python backend for the container's Python; this script starts that one and adds what
``finscore serve`` adds to Triton:

- only trained models are loaded: one ``--load-model`` for each model
  :meth:`engine.serving.repository.ModelRepository.trained_models` lists (explicit model control), so a folder
  without a trained version does not stop the server. ``--load-model`` flags on the command line are used instead,
  and a repository in object storage (``s3://``, ``gs://``, ``as://``) needs them: it cannot be listed from here;
- the stub watch (:class:`engine.serving.watch.StubWatch`): when a model's python-backend stub dies (the OOM
  killer), Triton 2.51 keeps calling the model and itself ready while every request fails, so neither a health
  check nor a Kubernetes probe sees it; the watch reloads the model through the HTTP endpoint (none under
  ``--allow-http=false``, and then no watch).

Usage (the image's CMD): ``python3 serve.py TRITONSERVER_FLAGS...``. SIGTERM and SIGINT are passed on to Triton,
which finishes the requests in flight within ``--exit-timeout-secs``; the exit status is Triton's.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from engine.serving.repository import ModelRepository
from engine.serving.server import ServerPorts
from engine.serving.watch import StubWatch

#: On PATH in NVIDIA's image (/opt/tritonserver/bin).
BINARY = "tritonserver"
#: Repository prefixes Triton reads from object storage itself.
REMOTE = ("s3://", "gs://", "as://")


def flag_values(argv: Sequence[str], flag: str) -> list[str]:
    """The values ``argv`` gives ``flag``, written ``--flag=value`` or ``--flag value``, in order."""
    found = []
    for i, arg in enumerate(argv):
        if arg.startswith(f"{flag}="):
            found.append(arg.split("=", 1)[1])
        elif arg == flag and i + 1 < len(argv):
            found.append(argv[i + 1])
    return found


def command(argv: Sequence[str]) -> list[str]:
    """The ``tritonserver`` command for the flags ``argv``: those flags, and when they name no model, a
    ``--load-model`` for each trained model of the repositories. Raises ``SystemExit`` with one sentence."""
    repositories = flag_values(argv, "--model-repository")
    if not repositories:
        raise SystemExit("Error: give --model-repository=PATH (a folder, or s3://, gs://, as:// storage)")
    if flag_values(argv, "--model-control-mode") != ["explicit"]:
        raise SystemExit("Error: give --model-control-mode=explicit: the models are loaded, and reloaded, by name")
    if flag_values(argv, "--load-model"):
        return [BINARY, *argv]
    remote = [r for r in repositories if r.startswith(REMOTE)]
    if remote:
        raise SystemExit(f"Error: the models in {remote[0]} cannot be listed from here: give --load-model=MODEL")
    models: list[str] = []
    for path in repositories:
        repo = ModelRepository(path)
        if not repo.root.is_dir():
            raise SystemExit(f"Error: model repository {repo.root} does not exist (is its volume mounted?)")
        models += [m for m in repo.trained_models() if m not in models]
    if not models:
        msg = f"Error: model repository {', '.join(repositories)} has no trained model: run `finscore train` into it"
        raise SystemExit(msg)
    return [BINARY, *argv, *(f"--load-model={m}" for m in models)]


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    flags = list(sys.argv[1:] if argv is None else argv)
    server = subprocess.Popen(command(flags))
    watch: StubWatch | None = None
    if "false" in flag_values(flags, "--allow-http"):
        _note("finscore: no stub watch without HTTP: restart the server if a model's stub dies")
    else:
        ports = flag_values(flags, "--http-port")
        port = int(ports[-1]) if ports else ServerPorts().http
        # Started with the server: a stub that dies while its model loads fails that load, and the watch only
        # reloads models Triton calls READY.
        watch = StubWatch(server.pid, f"http://127.0.0.1:{port}", note=_note).start()

    def _pass_on(signum: int, frame: FrameType | None) -> None:
        if watch is not None:  # first: the stubs that exit as Triton stops did not die
            watch.stop()
        server.send_signal(signum)

    signal.signal(signal.SIGTERM, _pass_on)
    signal.signal(signal.SIGINT, _pass_on)
    try:
        code = server.wait()
    finally:
        if watch is not None:
            watch.stop()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
