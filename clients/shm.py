"""Bulk scoring through Triton's system shared memory, for a server on this host.

:class:`SharedMemoryModelClient` keeps :class:`clients.grpc.ModelClient`'s ``infer_arrays`` contract but puts
every input in one shared-memory region (tensors at aligned offsets) and every output with a fixed element
size in another; BYTES outputs, whose size is unknown before the model runs, come back over gRPC as usual.
Only the request's description crosses the socket, which for big batches is several times faster.

Regions are created on the first request, re-created larger (doubling) only when a request needs more, and
named ``finscore-<pid namespace>-<pid>-<random>-in|out`` so clients and processes never collide. ``close()``
unregisters and removes them; a client that is garbage collected, or still open when the interpreter exits
normally, does the same (``weakref.finalize``). A process that is killed cannot: before its first region, each
later client reaps what dead processes of its own pid namespace left, on its server and in ``/dev/shm``
(:func:`reap_stale_regions`), so killed scans do not fill the host's shared memory.

>>> # with bulk_client("127.0.0.1:8001", "churn") as client:   # shared memory when the server is local
>>> #     outputs = client.infer_arrays(arrays)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import ipaddress
import logging
import os
import secrets
import socket
import sys
import threading
import types
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, serialize_byte_tensor, triton_to_np_dtype

from clients.errors import map_error
from clients.grpc import DEFAULT_URL, ModelClient
from clients.tls import Tls
from engine.errors import InvalidInputError, ServerError, ServerUnavailableError

__all__ = ["SharedMemoryModelClient", "SharedMemoryUnavailableError", "bulk_client", "is_local", "reap_stale_regions"]

log = logging.getLogger(__name__)

_ALIGN = 64  # tensors start on cache-line boundaries
_PAGE = 4096
_RELEASE_TIMEOUT = 5.0  # seconds: closing must not hang on a server that stopped answering
# Datatypes whose byte size follows from the shape (BF16 has no NumPy twin; BYTES varies per element).
_FIXED_SIZE = frozenset(
    {"BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64"}
)
_NO_SHM = "score over plain gRPC instead (--no-shared-memory, or bulk_client(..., shared_memory=False))"


class SharedMemoryUnavailableError(ServerError):
    """Shared memory cannot be used between this client and the server (plain gRPC still works)."""


@functools.cache
def _shm() -> types.ModuleType:
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


# --- where the server is ------------------------------------------------------------------------------------


def _host_of(url: str) -> str:
    text = url.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):  # [::1]:8001
        return text[1 : text.find("]")] if "]" in text else text[1:]
    if text.count(":") == 1:  # host:port
        return text.split(":", 1)[0]
    return text  # a bare name, IPv4 or IPv6 address


def _address_is_mine(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified:
        return True
    # The kernel lets a socket bind only to an address one of this machine's interfaces holds.
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:  # not ours, or no IPv6 on this machine
        return False
    return True


def is_local(url: str) -> bool:
    """Whether the server at ``url`` (``host:port``) runs on this machine, so shared memory can reach it.

    True for loopback names and addresses, a Unix socket, and any address one of this machine's interfaces
    holds (a host name counts if one of its addresses does). A server in a container on this host may still
    not share ``/dev/shm``; :class:`SharedMemoryModelClient` says so when registering fails.

    >>> is_local("127.0.0.1:8001"), is_local("[::1]:8001"), is_local("localhost:8001"), is_local("192.0.2.1:8001")
    (True, True, True, False)
    """
    if url.strip().startswith("unix:"):
        return True
    host = _host_of(url)
    if not host:
        return False
    if host.lower() in {"localhost", "localhost.localdomain", "ip6-localhost"}:
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return _address_is_mine(host)
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return False
    return any(_address_is_mine(str(info[4][0])) for info in infos)


# --- regions --------------------------------------------------------------------------------------------------


_DEV_SHM = "/dev/shm"


def _pid_namespace() -> str:
    """This process's pid namespace (the inode of ``/proc/self/ns/pid``): a pid means something only inside
    it, so regions of other containers sharing ``/dev/shm`` are never judged by it."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def _region_prefix() -> str:
    return f"finscore-{_pid_namespace()}-{os.getpid()}-{secrets.token_hex(4)}"


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


def reap_stale_regions(server: grpcclient.InferenceServerClient, *, shm_dir: str = _DEV_SHM) -> list[str]:
    """Unregister from ``server`` and remove from ``shm_dir`` the regions left by dead processes of this pid
    namespace (a scan killed with SIGKILL); the names reaped. Best effort: a failure is logged, never raised."""
    namespace = _pid_namespace()
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
            server.unregister_system_shared_memory(name, client_timeout=_RELEASE_TIMEOUT)
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


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def _destroy(name: str, handle: Any) -> None:
    """Unmap and unlink a region; a file someone else already removed is not an error worth raising."""
    try:
        _shm().destroy_shared_memory_region(handle)
    except _shm().SharedMemoryException as exc:
        log.warning("could not remove shared memory region /dev/shm/%s: %s", name, exc)


@dataclass
class _Region:
    name: str  # Triton's name for it; the file is /dev/shm/<name>
    size: int
    handle: Any
    view: np.ndarray | None  # the whole mapping as uint8, dropped before it is unmapped


class _Regions:
    """A client's regions by role (``"in"``, ``"out"``); also the finalizer, so it holds no reference to the client."""

    def __init__(self, server: grpcclient.InferenceServerClient, prefix: str) -> None:
        self.server = server
        self.prefix = prefix
        self.pid = os.getpid()  # a forked child must not remove its parent's regions
        self.by_role: dict[str, _Region] = {}
        self.closed = False
        self.reaped = False

    def get(self, role: str, needed: int, *, floor: int) -> _Region:
        """The ``role`` region, created or re-created so that it holds at least ``needed`` bytes.

        Raises ``SharedMemoryException`` (creating it here) or ``InferenceServerException`` (registering).
        """
        if self.closed:
            msg = "this shared-memory client is closed"
            raise RuntimeError(msg)
        region = self.by_role.get(role)
        if region is not None and region.size >= needed:
            return region
        size = _round_up(max(needed, floor, 2 * region.size if region else 0), _PAGE)
        if not self.reaped:
            self.reaped = True
            reap_stale_regions(self.server)
        if region is not None:
            self._drop(role)
        name = f"{self.prefix}-{role}"
        handle = _shm().create_shared_memory_region(name, f"/{name}", size)
        try:
            view = _shm().get_contents_as_numpy(handle, np.uint8, [size])
            self.server.register_system_shared_memory(name, f"/{name}", size)
        except BaseException:
            _destroy(name, handle)
            raise
        self.by_role[role] = region = _Region(name, size, handle, view)
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
            self.server.unregister_system_shared_memory(region.name, client_timeout=_RELEASE_TIMEOUT)
        except Exception as exc:  # a server that has gone away, a closed channel: the local file goes anyway
            log.debug("could not unregister shared memory region %s: %s", region.name, exc)
        _destroy(region.name, region.handle)

    def release(self) -> None:
        self.closed = True
        if os.getpid() != self.pid:
            return
        for role in list(self.by_role):
            self._drop(role)


# --- the client -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Output:
    name: str
    datatype: str
    dims: tuple[int, ...]  # without the batch dimension when the model batches


def _payload(name: str, arr: np.ndarray) -> tuple[str, np.ndarray]:
    """The Triton datatype of ``arr`` and its bytes as laid out on the wire (uint8, contiguous)."""
    datatype = "BYTES" if arr.dtype == object else np_to_triton_dtype(arr.dtype)
    if datatype is None:
        msg = f"input {name!r} is a {arr.dtype} array, which has no Triton datatype"
        raise InvalidInputError(msg)
    if datatype == "BYTES":
        blob = serialize_byte_tensor(arr).item() if arr.size else b""
        return datatype, np.frombuffer(blob, dtype=np.uint8)
    return datatype, np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


class SharedMemoryModelClient(ModelClient):
    """A :class:`ModelClient` whose ``infer_arrays`` moves tensors through system shared memory.

    Parameters
    ----------
    url, model, timeout
        As for :class:`ModelClient`; the server must run on this host and see its ``/dev/shm``.
    min_region_bytes
        The smallest region created; a region grows (doubling) only when a request needs more.

    Requests on one client are serialized (they share its regions); use one client per thread for parallel
    requests. Raises :class:`SharedMemoryUnavailableError` when shared memory cannot be set up.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str = "churn",
        *,
        timeout: float | None = 30.0,
        min_region_bytes: int = 1 << 20,
        tls: Tls | None = None,
    ) -> None:
        super().__init__(url, model, timeout=timeout, tls=tls)
        self.min_region_bytes = max(int(min_region_bytes), _PAGE)
        self.region_prefix = _region_prefix()
        self._regions = _Regions(self._client, self.region_prefix)
        self._release = weakref.finalize(self, self._regions.release)
        self._lock = threading.Lock()
        self._layout: tuple[list[_Output], bool] | None = None

    @property
    def region_names(self) -> list[str]:
        """The regions this client holds now (also their file names in ``/dev/shm``)."""
        return [r.name for r in self._regions.by_role.values()]

    def _output_layout(self) -> tuple[list[_Output], bool]:
        """Each output's datatype and dims, and whether the model batches (read once)."""
        if self._layout is None:
            metadata = self._call(self._client.get_model_metadata, self.model)
            config = self._call(self._client.get_model_config, self.model, as_json=True)["config"]
            batching = int(config.get("max_batch_size", 0) or 0) > 0
            outputs = []
            for t in metadata.outputs:
                dims = tuple(int(d) for d in t.shape)
                outputs.append(_Output(t.name, t.datatype, dims[1:] if batching else dims))
            self._layout = outputs, batching
        return self._layout

    def _shm_error(self, exc: Exception, *, size: int) -> Exception:
        if isinstance(exc, InferenceServerException):
            mapped = map_error(exc, url=self.url, model=self.model, tls=self.tls is not None)
            if isinstance(mapped, ServerUnavailableError):
                return mapped
            reason = (exc.message() or str(exc)).strip()
            return SharedMemoryUnavailableError(
                f"the Triton server at {self.url} cannot map this client's shared memory ({reason}); "
                f"if it runs in a container that does not share /dev/shm with this host, {_NO_SHM}"
            )
        return SharedMemoryUnavailableError(
            f"cannot create a shared memory region of {size:,} bytes in /dev/shm ({exc}); {_NO_SHM}"
        )

    def _region(self, role: str, needed: int) -> _Region:
        try:
            return self._regions.get(role, needed, floor=self.min_region_bytes)
        except (InferenceServerException, _shm().SharedMemoryException) as exc:
            raise self._shm_error(exc, size=needed) from None

    def infer_arrays(
        self, arrays: dict[str, np.ndarray], *, request_id: str = "", outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Send arrays already shaped ``[rows, 1]``; raw outputs (BYTES as bytes), as in :class:`ModelClient`."""
        names = list(outputs) if outputs else self.outputs
        layout, batching = self._output_layout()
        rows = next(iter(arrays.values())).shape[0] if arrays else 0

        inputs: list[tuple[str, list[int], str, np.ndarray, int]] = []
        in_bytes = 0
        for name, arr in arrays.items():
            datatype, payload = _payload(name, arr)
            inputs.append((name, list(arr.shape), datatype, payload, in_bytes))
            in_bytes += _round_up(payload.size, _ALIGN)

        # Outputs whose size is known before the model runs go to shared memory; BYTES (and BF16) over gRPC.
        fixed: dict[str, tuple[np.dtype, int, int]] = {}
        out_bytes = 0
        for out in layout:
            if out.datatype not in _FIXED_SIZE or out.name not in names or any(d < 0 for d in out.dims):
                continue
            dtype = np.dtype(triton_to_np_dtype(out.datatype))
            nbytes = (rows if batching else 1) * int(np.prod(out.dims, dtype=np.int64)) * dtype.itemsize
            fixed[out.name] = (dtype, out_bytes, nbytes)
            out_bytes += _round_up(nbytes, _ALIGN)

        with self._lock:
            for attempt in (1, 2):
                region_in = self._region("in", max(in_bytes, 1))
                region_out = self._region("out", out_bytes) if fixed else None
                assert region_in.view is not None
                infer_inputs = []
                for name, shape, datatype, payload, offset in inputs:
                    region_in.view[offset : offset + payload.size] = payload
                    tensor = grpcclient.InferInput(name, shape, datatype)
                    tensor.set_shared_memory(region_in.name, payload.size, offset)
                    infer_inputs.append(tensor)
                requested = []
                for name in names:
                    output = grpcclient.InferRequestedOutput(name)
                    if region_out is not None and name in fixed:
                        _, offset, nbytes = fixed[name]
                        output.set_shared_memory(region_out.name, nbytes, offset)
                    requested.append(output)
                try:
                    result = self._client.infer(
                        self.model, infer_inputs, outputs=requested, request_id=request_id, client_timeout=self.timeout
                    )
                except InferenceServerException as exc:
                    # A server that restarted has forgotten our regions: register them again, once.
                    if attempt == 1 and "NOT_FOUND" in str(exc.status()) and "shared memory" in (exc.message() or ""):
                        self._regions.forget()
                        continue
                    raise map_error(exc, url=self.url, model=self.model, tls=self.tls is not None) from None
                break
            return {name: self._read(result, name, fixed.get(name), region_out) for name in names}

    def _read(
        self, result: Any, name: str, where: tuple[np.dtype, int, int] | None, region: _Region | None
    ) -> np.ndarray:
        if where is None or region is None or region.view is None:
            return result.as_numpy(name)
        dtype, offset, nbytes = where
        shape = [int(d) for d in result.get_output(name).shape]
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize > nbytes:
            msg = f"model {self.model!r} returned {count} values for output {name!r}, more than its metadata allows"
            raise ServerError(msg)
        # A copy: the region is overwritten by the next request.
        return region.view[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape).copy()

    def close(self) -> None:
        """Unregister and remove the regions (best effort if the server has gone away), then close the channel."""
        with self._lock:
            self._release()
        super().close()

    def __enter__(self) -> SharedMemoryModelClient:
        return self


def bulk_client(
    url: str = DEFAULT_URL,
    model: str = "churn",
    *,
    shared_memory: bool | None = None,
    timeout: float | None = 30.0,
    tls: Tls | None = None,
) -> ModelClient:
    """A client for bulk scoring: through shared memory when the server is on this host, plain gRPC otherwise.

    Parameters
    ----------
    shared_memory
        ``None`` decides with :func:`is_local`; ``True`` or ``False`` forces the choice.
    """
    use = is_local(url) if shared_memory is None else shared_memory
    if use:
        return SharedMemoryModelClient(url, model, timeout=timeout, tls=tls)
    return ModelClient(url, model, timeout=timeout, tls=tls)
