"""The baseline a team would otherwise write: the same model version behind a FastAPI + uvicorn JSON endpoint.

``POST /score`` takes ``{"inputs": {column: [values...]}}`` and returns the model's outputs as JSON lists;
a bad request gets HTTP 400 with the scorer's sentence. :class:`FastAPIServer` runs it with uvicorn in a
child process on a free port (``workers`` uvicorn processes), as the benchmark suite does.

    python -m bench.fastapi_app --model churn --version-dir model_repo/churn/3 --port 8080 [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["FastAPIServer", "create_app", "from_env"]

_ENV_MODEL, _ENV_DIR = "FINSCORE_BENCH_MODEL", "FINSCORE_BENCH_VERSION_DIR"


def _always_nodelay() -> None:
    """TCP_NODELAY on every connection, as a single worker gets.

    With several workers uvicorn binds the listening socket itself, with protocol number 0; asyncio then
    skips TCP_NODELAY on the connections it accepts (it checks for IPPROTO_TCP), and each response waits
    out the client's delayed ACK: 44 ms per request, 358 requests/s at c=16 instead of thousands.
    """
    import asyncio.base_events
    import socket

    def nodelay(sock: socket.socket) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    asyncio.base_events._set_nodelay = nodelay  # type: ignore[attr-defined]


def create_app(model: str, version_dir: str | Path) -> Any:
    """A FastAPI app scoring with ``model``'s scorer loaded from ``version_dir``."""
    _always_nodelay()
    from fastapi import Body, FastAPI, HTTPException

    from bench.targets import scorer_class
    from clients.tensors import InputSpec, decode_outputs, encode_inputs
    from engine.errors import InvalidInputError

    scorer = scorer_class(model).load(version_dir)
    specs = [InputSpec(t.name, t.datatype, optional=t.optional) for t in scorer.inputs]
    app = FastAPI(title=f"{model} (FastAPI baseline)")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/score")
    def score(body: dict[str, Any] = Body(...)) -> dict[str, list[Any]]:  # noqa: B008 - FastAPI's idiom
        inputs = body.get("inputs")
        if not isinstance(inputs, dict):
            raise HTTPException(status_code=400, detail="the body must be {'inputs': {column: [values...]}}")
        try:
            # The JSON lists become typed arrays as the gRPC client's do (None is missing, numbers as FP32).
            outputs = scorer.score_rows(scorer.validate(encode_inputs(inputs, specs, model=model)))
        except InvalidInputError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return {name: arr.tolist() for name, arr in decode_outputs(outputs).items()}

    return app


def from_env() -> Any:
    """The app for uvicorn's ``--factory`` with several workers: model and version folder from the environment."""
    return create_app(os.environ[_ENV_MODEL], os.environ[_ENV_DIR])


class FastAPIServer:
    """The baseline in a child process, as a context manager: ``with FastAPIServer(...) as s: s.port``."""

    def __init__(self, model: str, version_dir: str | Path, *, port: int | None = None, workers: int = 1) -> None:
        from engine.serving.server import free_port

        self.model, self.version_dir = model, Path(version_dir)
        self.host, self.port, self.workers = "127.0.0.1", port or free_port(), workers
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def __enter__(self) -> FastAPIServer:
        env = {**os.environ, _ENV_MODEL: self.model, _ENV_DIR: str(self.version_dir)}
        cmd = [sys.executable, "-m", "bench.fastapi_app", "--port", str(self.port), "--workers", str(self.workers)]
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: nothing blocks if nobody reads it
        self.process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + 60
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._stderr.seek(0)
                err = self._stderr.read().decode("utf-8", "replace")
                self.__exit__()
                last = err.strip().splitlines()[-1] if err.strip() else "it did not answer within 60 s"
                msg = f"the FastAPI baseline did not start on port {self.port}: {last}"
                raise RuntimeError(msg)
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.fastapi_app", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help=f"model name (default: ${_ENV_MODEL})")
    parser.add_argument("--version-dir", help=f"trained version folder (default: ${_ENV_DIR})")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.model:
        os.environ[_ENV_MODEL] = args.model
    if args.version_dir:
        os.environ[_ENV_DIR] = args.version_dir
    if not os.environ.get(_ENV_MODEL) or not os.environ.get(_ENV_DIR):
        parser.error("give --model and --version-dir")
    uvicorn.run(
        "bench.fastapi_app:from_env", factory=True, host="127.0.0.1", port=args.port, workers=args.workers,
        log_level="warning", access_log=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
