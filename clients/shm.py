"""Bulk scoring through Triton's system shared memory, for a server on this host.

:class:`SharedMemoryModelClient` keeps :class:`clients.grpc.ModelClient`'s ``infer_arrays`` contract but puts
every input in one shared-memory region (tensors at aligned offsets) and every output with a fixed element
size in another; BYTES outputs, whose size is unknown before the model runs, come back over gRPC as usual.
Only the request's description crosses the socket, which for big batches is several times faster.

The regions themselves (naming, growth, release, reaping what killed processes left) are
:mod:`clients.regions`; this module decides where the server is (:func:`is_local`) and lays tensors out in them.

>>> # with bulk_client("127.0.0.1:8001", "churn") as client:   # shared memory when the server is local
>>> #     outputs = client.infer_arrays(arrays)
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, serialize_byte_tensor, triton_to_np_dtype

from clients.errors import map_error
from clients.grpc import DEFAULT_URL, ModelClient
from clients.regions import PAGE, Region, Regions, reap_stale_regions, region_prefix, round_up, shared_memory_module
from clients.tls import Tls
from engine.errors import InvalidInputError, ServerError, ServerUnavailableError, SharedMemoryUnavailableError

__all__ = ["SharedMemoryModelClient", "SharedMemoryUnavailableError", "bulk_client", "is_local", "reap_stale_regions"]

_ALIGN = 64  # tensors start on cache-line boundaries
# Datatypes whose byte size follows from the shape (BF16 has no NumPy twin; BYTES varies per element).
_FIXED_SIZE = frozenset(
    {"BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64"}
)
_NO_SHM = "score over plain gRPC instead (--no-shared-memory, or bulk_client(..., shared_memory=False))"


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
        features: bool | None = None,
    ) -> None:
        super().__init__(url, model, timeout=timeout, tls=tls, features=features)
        self.min_region_bytes = max(int(min_region_bytes), PAGE)
        self.region_prefix = region_prefix()
        self._regions = Regions(self._client, self.region_prefix)
        self._release = weakref.finalize(self, self._regions.release)
        self._lock = threading.Lock()
        self._layouts: dict[str, tuple[list[_Output], bool]] = {}

    @property
    def region_names(self) -> list[str]:
        """The regions this client holds now (also their file names in ``/dev/shm``)."""
        return [r.name for r in self._regions.by_role.values()]

    def _output_layout(self, model: str) -> tuple[list[_Output], bool]:
        """Each output's datatype and dims of ``model``, and whether it batches (read once)."""
        if model not in self._layouts:
            metadata = self._call(self._client.get_model_metadata, model)
            config = self._call(self._client.get_model_config, model, as_json=True)["config"]
            batching = int(config.get("max_batch_size", 0) or 0) > 0
            outputs = []
            for t in metadata.outputs:
                dims = tuple(int(d) for d in t.shape)
                outputs.append(_Output(t.name, t.datatype, dims[1:] if batching else dims))
            self._layouts[model] = outputs, batching
        return self._layouts[model]

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

    def _region(self, role: str, needed: int) -> Region:
        try:
            return self._regions.get(role, needed, floor=self.min_region_bytes)
        except (InferenceServerException, shared_memory_module().SharedMemoryException) as exc:
            raise self._shm_error(exc, size=needed) from None

    def _send(
        self, model: str, arrays: dict[str, np.ndarray], names: list[str], request_id: str
    ) -> dict[str, np.ndarray]:
        """One inference of ``model`` through the regions (:meth:`ModelClient.infer_arrays` calls it)."""
        layout, batching = self._output_layout(model)
        rows = next(iter(arrays.values())).shape[0] if arrays else 0

        inputs: list[tuple[str, list[int], str, np.ndarray, int]] = []
        in_bytes = 0
        for name, arr in arrays.items():
            datatype, payload = _payload(name, arr)
            inputs.append((name, list(arr.shape), datatype, payload, in_bytes))
            in_bytes += round_up(payload.size, _ALIGN)

        # Outputs whose size is known before the model runs go to shared memory; BYTES (and BF16) over gRPC.
        fixed: dict[str, tuple[np.dtype, int, int]] = {}
        out_bytes = 0
        for out in layout:
            if out.datatype not in _FIXED_SIZE or out.name not in names or any(d < 0 for d in out.dims):
                continue
            dtype = np.dtype(triton_to_np_dtype(out.datatype))
            nbytes = (rows if batching else 1) * int(np.prod(out.dims, dtype=np.int64)) * dtype.itemsize
            fixed[out.name] = (dtype, out_bytes, nbytes)
            out_bytes += round_up(nbytes, _ALIGN)

        return self._retrying(lambda: self._infer_once(model, inputs, in_bytes, names, fixed, out_bytes, request_id))

    def _infer_once(
        self,
        model: str,
        inputs: list[tuple[str, list[int], str, np.ndarray, int]],
        in_bytes: int,
        names: list[str],
        fixed: dict[str, tuple[np.dtype, int, int]],
        out_bytes: int,
        request_id: str,
    ) -> dict[str, np.ndarray]:
        """One inference through the regions; tritonclient's exception when the server refuses it."""
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
                        model, infer_inputs, outputs=requested, request_id=request_id, client_timeout=self.timeout
                    )
                except InferenceServerException as exc:
                    # A server that restarted has forgotten our regions: register them again, once.
                    if attempt == 1 and "NOT_FOUND" in str(exc.status()) and "shared memory" in (exc.message() or ""):
                        self._regions.forget()
                        continue
                    raise
                break
            return {name: self._read(result, name, fixed.get(name), region_out) for name in names}

    def _read(
        self, result: Any, name: str, where: tuple[np.dtype, int, int] | None, region: Region | None
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
    features: bool | None = None,
) -> ModelClient:
    """A client for bulk scoring: through shared memory when the server is on this host, plain gRPC otherwise.

    Parameters
    ----------
    shared_memory
        ``None`` decides with :func:`is_local`; ``True`` or ``False`` forces the choice.
    """
    use = is_local(url) if shared_memory is None else shared_memory
    if use:
        return SharedMemoryModelClient(url, model, timeout=timeout, tls=tls, features=features)
    return ModelClient(url, model, timeout=timeout, tls=tls, features=features)
