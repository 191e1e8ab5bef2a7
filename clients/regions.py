"""Triton system shared-memory regions on this host: created, grown, registered, released and reaped.

:class:`Regions` holds one client's regions by role (``"in"``, ``"out"``). A region is created on the first
request that needs it, re-created larger (doubling) only when a request needs more, and named
``finscore-<pid namespace>-<pid>-<random>-<role>`` so clients and processes never collide. ``release()`` unregisters
and removes them; it is also the client's finalizer, so it holds no reference to the client. A process that is
killed cannot release: before its first region, each later client reaps what dead processes of its own pid
namespace left, on its server and in ``/dev/shm`` (:func:`reap_stale_regions`), so killed scans do not fill the
host's shared memory. :class:`clients.shm.SharedMemoryModelClient` lays tensors out in these regions.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import secrets
import sys
import time
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

__all__ = [
    "PAGE",
    "Region",
    "Regions",
    "pid_namespace",
    "reap_stale_regions",
    "region_prefix",
    "round_up",
    "shared_memory_module",
    "unregister",
]

log = logging.getLogger(__name__)

PAGE = 4096
_RELEASE_TIMEOUT = 5.0  # seconds: closing must not hang on a server that stopped answering
_IN_USE = "currently in use"  # Triton's refusal to unregister a region a request still holds


@functools.cache
def shared_memory_module() -> types.ModuleType:
    """``tritonclient.utils.shared_memory``, even where ``pkg_resources`` is gone.

    tritonclient 2.51 (pinned to match the bundled server) finds its ``libcshm.so`` with
    ``pkg_resources.resource_filename``, and setuptools 81+ no longer ships ``pkg_resources``. A stand-in
    that answers that one call is visible only while the module imports. Loaded on first use, so importing
    ``clients`` never depends on it.
    """
    name = "tritonclient.utils.shared_memory"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
    spec = importlib.util.find_spec(name)
    folder = next(iter(spec.submodule_search_locations or [])) if spec else None
    if folder is None:
        raise ModuleNotFoundError(name)
    stand_in = types.ModuleType("pkg_resources")
    stand_in.resource_filename = lambda _package, resource: os.path.join(folder, resource)  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = stand_in
    try:
        return importlib.import_module(name)
    finally:
        if sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]


_DEV_SHM = "/dev/shm"


def pid_namespace() -> str:
    """This process's pid namespace (the inode of ``/proc/self/ns/pid``): a pid means something only inside
    it, so regions of other containers sharing ``/dev/shm`` are never judged by it."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def region_prefix() -> str:
    return f"finscore-{pid_namespace()}-{os.getpid()}-{secrets.token_hex(4)}"


def _dead_owner(name: str, namespace: str) -> bool:
    """Whether ``name`` is a finscore region of ``namespace`` whose process no longer exists."""
    parts = name.split("-")
    if len(parts) != 5 or parts[0] != "finscore" or parts[1] != namespace or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


def unregister(server: grpcclient.InferenceServerClient, name: str) -> None:
    """Unregister the region ``name`` from ``server``, waiting for a request that still holds it.

    Triton answers a request before it releases the request's input region, and refuses to unregister a region
    in use, so a client closed right after an answer can be refused for a moment: retry with a growing pause,
    for at most ``_RELEASE_TIMEOUT`` seconds in all. Any other failure is raised at once.
    """
    deadline = time.monotonic() + _RELEASE_TIMEOUT
    pause = 0.001
    while True:
        left = deadline - time.monotonic()
        try:
            server.unregister_system_shared_memory(name, client_timeout=max(left, 0.1))
        except InferenceServerException as exc:
            if _IN_USE not in str(exc) or left <= pause:
                raise
        else:
            return
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def reap_stale_regions(server: grpcclient.InferenceServerClient, *, shm_dir: str = _DEV_SHM) -> list[str]:
    """Unregister from ``server`` and remove from ``shm_dir`` the regions left by dead processes of this pid
    namespace (a scan killed with SIGKILL); the names reaped. Best effort: a failure is logged, never raised."""
    namespace = pid_namespace()
    try:
        local = {n for n in os.listdir(shm_dir) if _dead_owner(n, namespace)}
    except OSError:
        local = set()
    try:
        status = server.get_system_shared_memory_status(client_timeout=_RELEASE_TIMEOUT)
        on_server = {n for n in status.regions if _dead_owner(n, namespace)}
    except Exception as exc:  # an old server, a closed channel: the files still go
        log.debug("could not list the server's shared memory regions: %s", exc)
        on_server = set()
    for name in sorted(on_server):
        try:  # the server keeps the region mapped until it is unregistered, file or not
            unregister(server, name)
        except Exception as exc:
            log.debug("could not unregister stale shared memory region %s: %s", name, exc)
    for name in sorted(local):
        try:
            os.unlink(os.path.join(shm_dir, name))
        except OSError as exc:
            log.warning("could not remove stale shared memory region %s/%s: %s", shm_dir, name, exc)
    reaped = sorted(local | on_server)
    if reaped:
        log.info("removed %d shared memory regions left by processes that were killed", len(reaped))
    return reaped


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def _destroy(name: str, handle: Any) -> None:
    """Unmap and unlink a region; a file someone else already removed is not an error worth raising."""
    try:
        shared_memory_module().destroy_shared_memory_region(handle)
    except shared_memory_module().SharedMemoryException as exc:
        log.warning("could not remove shared memory region /dev/shm/%s: %s", name, exc)


@dataclass
class Region:
    name: str  # Triton's name for it; the file is /dev/shm/<name>
    size: int
    handle: Any
    view: np.ndarray | None  # the whole mapping as uint8, dropped before it is unmapped


class Regions:
    """A client's regions by role (``"in"``, ``"out"``); also the finalizer, so it holds no reference to the client."""

    def __init__(self, server: grpcclient.InferenceServerClient, prefix: str) -> None:
        self.server = server
        self.prefix = prefix
        self.pid = os.getpid()  # a forked child must not remove its parent's regions
        self.by_role: dict[str, Region] = {}
        self.closed = False
        self.reaped = False

    def get(self, role: str, needed: int, *, floor: int) -> Region:
        """The ``role`` region, created or re-created so that it holds at least ``needed`` bytes.

        Raises ``SharedMemoryException`` (creating it here) or ``InferenceServerException`` (registering).
        """
        if self.closed:
            msg = "this shared-memory client is closed"
            raise RuntimeError(msg)
        region = self.by_role.get(role)
        if region is not None and region.size >= needed:
            return region
        size = round_up(max(needed, floor, 2 * region.size if region else 0), PAGE)
        if not self.reaped:
            self.reaped = True
            reap_stale_regions(self.server)
        if region is not None:
            self._drop(role)
        name = f"{self.prefix}-{role}"
        handle = shared_memory_module().create_shared_memory_region(name, f"/{name}", size)
        try:
            view = shared_memory_module().get_contents_as_numpy(handle, np.uint8, [size])
            self.server.register_system_shared_memory(name, f"/{name}", size)
        except BaseException:
            _destroy(name, handle)
            raise
        self.by_role[role] = region = Region(name, size, handle, view)
        return region

    def forget(self) -> None:
        """Drop every region (after the server lost them, e.g. it restarted); the next request re-creates them."""
        for role in list(self.by_role):
            self._drop(role)

    def _drop(self, role: str) -> None:
        """Unregister (best effort) and remove one region."""
        region = self.by_role.pop(role)
        region.view = None
        try:
            unregister(self.server, region.name)
        except Exception as exc:  # a server that has gone away, a closed channel: the local file goes anyway
            log.debug("could not unregister shared memory region %s: %s", region.name, exc)
        _destroy(region.name, region.handle)

    def release(self) -> None:
        self.closed = True
        if os.getpid() != self.pid:
            return
        for role in list(self.by_role):
            self._drop(role)
