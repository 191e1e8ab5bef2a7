"""Watching a server's python-backend stubs, and reloading a model whose stub died.

Each instance of a python-backend model runs in its own stub process, a child of ``tritonserver``. When one
dies (killed, out of memory), Triton 2.51 keeps reporting the model and the server ready while it fails every
request with INTERNAL "Stub process ... is not healthy", until someone reloads the model. Asking Triton to load
it again does nothing (its files have not changed), so :class:`StubWatch` unloads it and loads it again: while it
is gone, strict readiness (``/v2/health/ready``) answers 503, requests get "unknown model" (which finscore's
clients retry), and after the load the model answers again. Measured on this 2-core VM under a concurrency-8
load: see the README ("Self-healing serving").

The watch reads ``/proc`` (a stub's command line names its model's ``model.py``, its shared-memory region and
its parent's pid), so it costs no request. A dead stub's region in ``/dev/shm`` is left behind by the backend;
the watch removes it once the model is reloaded. Every reload is one line in the server log and one
``model_reload`` line in the audit log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Stub", "StubWatch", "stubs_of"]

log = logging.getLogger(__name__)
STUB = "triton_python_backend_stub"
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str
    version: str
    region: str
    started: int = 0  # clock ticks after boot (/proc/<pid>/stat field 22)


def stubs_of(server_pid: int, proc: Path = Path("/proc")) -> list[Stub]:
    """The live python-backend stubs of the server ``server_pid``: their pid, model and shared-memory region."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone between the listing and the read
            continue
        # argv: stub, <repo>/<model>/<version>/model.py, shm region, sizes, parent pid, backend folder, ...
        if len(args) < 6 or not args[0].endswith(STUB.encode()) or state[0] == "Z":
            continue
        if int(state[1]) != server_pid:
            continue
        version_dir = Path(args[1].decode(errors="replace")).parent
        region = args[2].decode(errors="replace")
        found.append(Stub(int(entry.name), version_dir.parent.name, version_dir.name, region, int(state[19])))
    return found


class StubWatch:
    """A thread that checks a server's stubs every ``interval`` seconds and reloads a model one of whose stubs
    died, through the repository API at ``http_url``. ``note`` receives each line to log (the server log)."""

    def __init__(
        self,
        server_pid: int,
        http_url: str,
        *,
        interval: float = 0.5,
        load_timeout: float = 300.0,
        note: Callable[[str], None] | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        self.server_pid = server_pid
        self.proc = proc
        self.http_url = http_url
        self.interval = interval
        self.load_timeout = load_timeout
        self.note = note or log.warning
        self.reloads: list[tuple[str, float]] = []  # (model, seconds it took), for tests and reports
        self._known: dict[int, Stub] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="finscore-stub-watch", daemon=True)

    def start(self) -> StubWatch:
        self._known = {s.pid: s for s in stubs_of(self.server_pid, self.proc)}
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # the watch must outlive any one failed check
                self.note(f"finscore: the stub watch could not check the server: {exc}")

    def check(self) -> list[str]:
        """One look: reload each model that lost a stub since the last look; the models reloaded.

        A stub also exits when its model is unloaded, or loaded again (new stubs replace it); only a stub whose
        model version Triton still calls READY, and that no newer stub of that version replaced, died on its own."""
        live = {s.pid: s for s in stubs_of(self.server_pid, self.proc)}
        vanished = [s for pid, s in self._known.items() if pid not in live]
        self._known = live
        if not vanished:
            return []
        ready = self._ready_versions()
        broken = sorted({s.model for s in vanished if (s.model, s.version) in ready and not self._replaced(s, live)})
        for model in broken:
            pids = ", ".join(str(s.pid) for s in vanished if s.model == model)
            self.note(f"finscore: the python-backend stub of model {model!r} (pid {pids}) died; reloading the model")
            started = time.monotonic()
            try:
                self._reload(model)
            except Exception as exc:
                self.note(f"finscore: reloading model {model!r} failed: {exc}; it stays unavailable")
                self._audit(model, "failed", str(exc))
                continue
            took = time.monotonic() - started
            self.reloads.append((model, took))
            self.note(f"finscore: model {model!r} reloaded in {took:.1f} s")
            self._audit(model, "reloaded", f"stub pid {pids} died", seconds=round(took, 2))
        for s in vanished:
            with contextlib.suppress(OSError):  # the backend leaves a dead stub's region behind
                (SHM / s.region).unlink()
        if broken:  # the new stubs, so that they are watched too
            self._known = {s.pid: s for s in stubs_of(self.server_pid, self.proc)}
        return broken

    @staticmethod
    def _replaced(stub: Stub, live: dict[int, Stub]) -> bool:
        """Whether a stub of the same model version started after ``stub``: a reload of that version (its new
        stubs start before the old ones exit), not a death."""
        return any(
            s.model == stub.model and s.version == stub.version and s.started > stub.started for s in live.values()
        )

    def _ready_versions(self) -> set[tuple[str, str]]:
        request = urllib.request.Request(f"{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            index = json.loads(response.read())
        return {(str(m["name"]), str(m.get("version", ""))) for m in index if m.get("state") == "READY"}

    def _post(self, path: str, timeout: float) -> None:
        request = urllib.request.Request(f"{self.http_url}{path}", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=timeout):
            pass

    def _reload(self, model: str) -> None:
        # Triton ignores a load of a model whose files have not changed: unload first. Unloading waits for the
        # requests in flight; the load starts new stubs.
        try:
            self._post(f"/v2/repository/models/{model}/unload", 60)
            self._post(f"/v2/repository/models/{model}/load", self.load_timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            msg = f"Triton answered {exc.code}: {detail}"
            raise RuntimeError(msg) from None

    @staticmethod
    def _audit(model: str, outcome: str, reason: str, **fields: object) -> None:
        from engine.security.trail import Trail

        try:
            Trail.from_env().event("model_reload", model=model, outcome=outcome, reason=reason, **fields)
        except Exception as exc:  # the server keeps healing even when the audit log cannot be written
            log.error("could not append the model_reload line to the audit log: %s", exc)
