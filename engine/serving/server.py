"""Launching the real ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel against a model repository.

:class:`TritonServer` is a context manager (used by ``finscore serve``, the tests, the benchmarks and
``make run``): it checks the repository and the ports, starts the binary with the environment its python
backend needs, waits until every model is ready, and always stops the process.

Why the environment is set here: the backend's stub embeds libpython and ignores PYTHONPATH; it finds
packages through ``python3`` on ``PATH`` (this interpreter's folder goes first, so a virtual environment
is honoured) and needs ``LD_LIBRARY_PATH`` with the wheel's ``nvidia_pytriton.libs`` and Python's LIBDIR.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from engine.errors import ModelNotReadyError, PortInUseError, ServerError, ServerStartError, UsageError
from engine.serving.repository import ModelRepository
from engine.serving.watch import StubWatch

__all__ = ["ServerPorts", "ServerTls", "TritonServer", "free_port", "triton_paths"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerPorts:
    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> ServerPorts:
        """Three distinct ports free now (held together while chosen, so none is handed out twice)."""
        socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
        try:
            for s in socks:
                s.bind((host, 0))
            grpc, http, metrics = (int(s.getsockname()[1]) for s in socks)
        finally:
            for s in socks:
                s.close()
        return cls(grpc=grpc, http=http, metrics=metrics)

    def check_distinct(self) -> None:
        if len({self.grpc, self.http, self.metrics}) != 3:
            msg = f"the gRPC, HTTP and metrics ports must differ, got {self.grpc}, {self.http}, {self.metrics}"
            raise PortInUseError(msg)


@dataclass(frozen=True)
class _Paths:
    binary: Path
    backends: Path
    libs: Path


def triton_paths() -> _Paths:
    """Where the wheel put the server, its python backend and its shared libraries."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        msg = "the bundled Triton server is not installed: pip install 'finscore[serve]' (or run `make run` to set up)"
        raise ServerStartError(msg)
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    libs = root.parent.parent / "nvidia_pytriton.libs"
    return _Paths(binary=root / "bin" / "tritonserver", backends=root / "backends", libs=libs)


def _backend_dir(paths: _Paths) -> Path:
    """A backend folder whose python backend has the stub for this Python version beside it.

    The wheel ships stubs per Python version in a separate folder; the backend looks for its stub next to
    ``libtriton_python.so``. Built once, next to this interpreter (or in the temp folder if that is read-only).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = paths.backends.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        msg = f"the bundled Triton has no python-backend stub for Python {version}"
        raise ServerStartError(msg)
    for base in (Path(sys.prefix) / "var" / "finscore", Path(tempfile.gettempdir()) / f"finscore-{os.getuid()}"):
        target = base / f"triton-backends-{version}"
        python_dir = target / "python"
        try:
            python_dir.mkdir(parents=True, exist_ok=True)
            for item in (paths.backends / "python").iterdir():
                if item.name == "__pycache__":
                    continue
                link = python_dir / item.name
                if not link.exists():
                    link.symlink_to(item)
            link = python_dir / stub.name
            if not link.exists():
                link.symlink_to(stub)
            return target
        except OSError:
            continue
    msg = "cannot prepare a backend folder for the bundled Triton (no writable location)"
    raise ServerStartError(msg)


def server_env(paths: _Paths) -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [str(paths.libs), libdir, env.get("LD_LIBRARY_PATH", "")] if p)
    env.pop("PYTHONPATH", None)
    # Each model instance is its own process and Triton runs instances side by side: one thread each keeps
    # a small request from waking (and waiting for) a pool of threads on busy cores.
    env.setdefault("POLARS_MAX_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def parse_cpus(text: str) -> frozenset[int]:
    """The CPUs named by ``text`` as taskset and cgroups write them (``0``, ``0-3``, ``0,2-3``), each one this
    process may run on; a :class:`UsageError` says what is wrong otherwise.

    >>> sorted(parse_cpus("0"))
    [0]
    """
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()) or (dash and int(last) < int(first)):
            msg = f"CPUs are written as taskset writes them (0, 0-3 or 0,2-3), not {text!r}"
            raise UsageError(msg)
        cpus.update(range(int(first), int(last or first) + 1))
    allowed = os.sched_getaffinity(0)
    if not cpus <= allowed:
        missing = ",".join(str(c) for c in sorted(cpus - allowed))
        have = ",".join(str(c) for c in sorted(allowed))
        msg = f"CPU {missing} is not one this machine lets finscore run on (it may use {have})"
        raise UsageError(msg)
    return frozenset(cpus)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(host: str, port: int, role: str, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            msg = f"port {port} ({role}) on {host} is already in use; stop what holds it or choose another with {flag}"
            raise PortInUseError(msg) from None


_LOAD_ERROR = re.compile(r"failed to load '([^']+)' version (\d+): (.*)")


def _load_errors(log_text: str) -> list[str]:
    found = []
    for m in _LOAD_ERROR.finditer(log_text):
        # Keep the model's own sentence, not the stack trace the backend appends (escaped newlines).
        reason = re.split(r"\\n|Stack trace:|\n", m.group(3))[0].strip().rstrip(".")
        found.append(f"model {m.group(1)!r} version {m.group(2)} failed to load: {reason}")
    return found


@dataclass(frozen=True)
class ServerTls:
    """gRPC over TLS: the server's certificate and key (PEM); with ``ca``, mutual TLS (clients must present a
    certificate that CA signed). Triton's HTTP endpoint has no TLS, so a server with TLS serves gRPC only."""

    cert: Path
    key: Path
    ca: Path | None = None

    @classmethod
    def from_files(
        cls, cert: str | os.PathLike[str] | None, key: str | os.PathLike[str] | None, ca: str | os.PathLike[str] | None
    ) -> ServerTls | None:
        if cert is None and key is None and ca is None:
            return None
        if cert is None or key is None:
            msg = "TLS needs both --tls-cert and --tls-key (--tls-ca adds mutual TLS)"
            raise ServerStartError(msg)
        paths = [Path(p) for p in (cert, key, *([ca] if ca is not None else []))]
        for p, what in zip(paths, ("--tls-cert", "--tls-key", "--tls-ca"), strict=False):
            if not p.is_file():
                msg = f"{what} {p} is not a readable file"
                raise ServerStartError(msg)
        return cls(paths[0], paths[1], paths[2] if ca is not None else None)

    def flags(self) -> list[str]:
        out = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.ca is not None:
            out += [f"--grpc-root-cert={self.ca}", "--grpc-use-ssl-mutual=true"]
        return out + ["--allow-http=false"]


class TritonServer:
    """The bundled ``tritonserver`` serving a model repository, as a context manager.

    >>> # with TritonServer("model_repo") as server: client = ModelClient(server.grpc_url)
    """

    def __init__(
        self,
        repository: str | os.PathLike[str] | ModelRepository,
        *,
        ports: ServerPorts | None = None,
        host: str = "127.0.0.1",
        models: list[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        ready_timeout: float = 120.0,
        verbose: bool = False,
        env: Mapping[str, str] | None = None,
        tls: ServerTls | None = None,
        watch: bool = True,
        more_repositories: Sequence[str | os.PathLike[str]] = (),
        cpus: frozenset[int] | None = None,
    ) -> None:
        self.repo = repository if isinstance(repository, ModelRepository) else ModelRepository(repository)
        #: The CPUs the server and every model stub it starts run on (:func:`parse_cpus`); None: all.
        self.cpus = cpus
        self.ports = ports or ServerPorts()
        self.host = host
        self.models = models
        self.ready_timeout = ready_timeout
        self.verbose = verbose
        self.tls = tls
        #: Further folders of models (a benchmark's floor model), served beside the repository's.
        self.more_repositories = [Path(p) for p in more_repositories]
        self.env = dict(env or {})  # added to the server's environment (read by the models as they load)
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"finscore-triton-{self.ports.grpc}.log"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.loaded: list[str] = []
        #: Reload a model whose python-backend stub died (:mod:`engine.serving.watch`); needs the HTTP endpoint.
        self.watch: StubWatch | None = None
        self._watching = watch

    @property
    def grpc_url(self) -> str:
        host = "127.0.0.1" if self.host in {"0.0.0.0", ""} else self.host
        return f"{host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.host in {"0.0.0.0", ""} else self.host
        return f"http://{host}:{self.ports.http}"

    def _command(self, paths: _Paths, models: list[str]) -> list[str]:
        cmd = [
            str(paths.binary),
            f"--model-repository={self.repo.root}",
            *(f"--model-repository={p}" for p in self.more_repositories),
            f"--backend-directory={_backend_dir(paths)}",
            # Only trained models are loaded, so an untrained folder in the repository does not stop the server.
            "--model-control-mode=explicit",
            # The configs are complete (generated with each version): without auto-completion Triton does not
            # start a throw-away stub per load to ask model.py for one. A load took 2.8-4.2 s instead of 9.9-11.8 s.
            "--disable-auto-complete-config",
            *(f"--load-model={m}" for m in models),
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--http-address={self.host}",
            f"--http-port={self.ports.http}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",
            "--strict-readiness=true",
            f"--log-verbose={1 if self.verbose else 0}",
            *(self.tls.flags() if self.tls else []),
        ]
        from engine.device import gpu_available

        if not gpu_available():
            cmd.append("--pinned-memory-pool-byte-size=0")
        return cmd

    def start(self) -> TritonServer:
        if not self.repo.root.is_dir():
            msg = f"model repository {self.repo.root} does not exist"
            raise ModelNotReadyError(msg)
        models = self.models if self.models is not None else self.repo.trained_models()
        if not models:
            msg = (
                f"model repository {self.repo.root} has no trained model: "
                "run `finscore train churn --data FILE --label COLUMN` first"
            )
            raise ModelNotReadyError(msg)
        for m in models:
            if not any((p / m).is_dir() for p in self.more_repositories):
                self.repo.latest(m)  # a clear sentence for an untrained model asked for by name
        self.ports.check_distinct()
        for port, role, flag in (
            (self.ports.grpc, "gRPC", "--grpc-port"),
            *([] if self.tls else [(self.ports.http, "HTTP", "--http-port")]),
            (self.ports.metrics, "metrics", "--metrics-port"),
        ):
            _check_port(self.host, port, role, flag)
        paths = triton_paths()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")
        log = self.log_path.open("ab")  # appended to, so the stub watch's lines and Triton's never overwrite
        # The CPUs are this thread's while it starts the server: the child inherits them before Triton runs, so
        # its threads and the stubs it forks do too (no code runs in the child between fork and exec).
        keep = os.sched_getaffinity(0) if self.cpus else None
        try:
            if self.cpus:
                os.sched_setaffinity(0, self.cpus)
            self.process = subprocess.Popen(
                self._command(paths, models),
                env={**server_env(paths), **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop the server in order
            )
        finally:
            if keep is not None:
                os.sched_setaffinity(0, keep)
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.loaded = models
        if self._watching:
            if self.tls is None:
                self.watch = StubWatch(self.process.pid, self.http_url, note=self.note).start()
            else:
                self.note(
                    "finscore: no stub watch under TLS (no HTTP endpoint to reload through): restart the "
                    "server if a model's stub dies"
                )
        return self

    def note(self, line: str) -> None:
        """Append one line of finscore's own to the server log (and to this process's log)."""
        log.warning("%s", line)
        with contextlib.suppress(OSError), self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _failure(self, what: str) -> ServerError:
        text = self.log_text()
        errors = _load_errors(text)
        if errors:
            return ServerStartError(errors[0])
        if "address already in use" in text.lower() or "failed to start" in text.lower() and "bind" in text.lower():
            return PortInUseError(f"Triton could not bind its ports ({self.ports}); choose other ports")
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        return ServerStartError(f"Triton {what}; its log ({self.log_path}) ends: {tail}")

    def _ready(self) -> bool:
        if self.tls is not None:
            # No HTTP under TLS, and a probe over gRPC would need a client certificate: Triton starts its gRPC
            # service only once the models given by --load-model have loaded (a failed load stops it).
            return "Started GRPCInferenceService" in self.log_text()
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._failure(f"exited during start-up (code {self.process.returncode})")
            if self._ready():
                return
            time.sleep(0.1)
        raise self._failure(f"was not ready after {self.ready_timeout:.0f} s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL if Triton has not exited."""
        watch, self.watch = self.watch, None
        if watch is not None:  # first: a stub that exits on shutdown did not die
            watch.stop()
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
