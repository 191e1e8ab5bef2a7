"""Against the real bundled Triton: shared-memory transport answers exactly as plain gRPC and leaves nothing behind."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from clients import ModelClient, SharedMemoryModelClient, SharedMemoryUnavailableError, bulk_client, is_local
from clients.regions import PAGE, Regions, region_prefix, shared_memory_module
from engine.errors import InvalidInputError, ServerUnavailableError
from engine.families.churn import ChurnScorer, ChurnTrainResult
from engine.serving.server import ServerPorts, TritonServer, free_port
from tests.conftest import request_arrays

SHM = Path("/dev/shm")


def plain(server: TritonServer, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The raw-column model's answer over plain gRPC: what every other path must give, value for value."""
    with ModelClient(server.grpc_url, "churn", features=False) as client:
        return client.infer_arrays(arrays)


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert np.array_equal(got[name], want[name]), name


def registered(server: TritonServer, prefix: str) -> dict[str, int]:
    """The server's registered system shared memory regions named ``prefix...``, with their byte sizes."""
    with grpcclient.InferenceServerClient(server.grpc_url) as raw:
        status = raw.get_system_shared_memory_status()
    return {name: int(r.byte_size) for name, r in status.regions.items() if name.startswith(prefix)}


def files(prefix: str) -> list[str]:
    return sorted(p.name for p in SHM.glob(f"{prefix}*"))


@pytest.mark.parametrize("features", [True, False], ids=["twin", "raw"])
def test_shared_memory_equals_plain_grpc(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame, features: bool
) -> None:
    arrays = request_arrays(scorer, customers.head(300))
    with SharedMemoryModelClient(server.grpc_url, "churn", features=features) as client:
        got = client.infer_arrays(arrays)
        # Both regions are in use: all inputs, and the FP32 output (the BYTES outputs come over gRPC).
        assert sorted(client.region_names) == [f"{client.region_prefix}-in", f"{client.region_prefix}-out"]
        assert sorted(registered(server, client.region_prefix)) == sorted(client.region_names)
    assert_same(got, plain(server, arrays))
    assert got["reason_codes"].shape == (300, 3) and isinstance(got["reason_codes"][0, 0], bytes)


def test_regions_grow_and_earlier_results_stay_intact(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    small, large = request_arrays(scorer, customers.head(50)), request_arrays(scorer, customers.slice(100, 2500))
    with SharedMemoryModelClient(server.grpc_url, "churn", min_region_bytes=4096) as client:
        first = client.infer_arrays(small)
        size_before = registered(server, client.region_prefix)
        kept = {name: arr.copy() for name, arr in first.items()}
        second = client.infer_arrays(large)
        size_after = registered(server, client.region_prefix)
        third = client.infer_arrays(small)
        assert registered(server, client.region_prefix) == size_after  # a smaller request does not shrink them
    assert len(size_before) == 2 and size_after.keys() == size_before.keys()
    assert all(size_after[name] > size_before[name] for name in size_before), (size_before, size_after)
    assert_same(second, plain(server, large))
    assert_same(first, kept)  # returned arrays are copies, not views of a region the next request overwrote
    assert_same(third, kept)


def test_two_clients_at_once_do_not_collide(server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame) -> None:
    batches = [request_arrays(scorer, customers.slice(i * 400, 400)) for i in range(2)]
    want = [plain(server, b) for b in batches]
    got: list[list[dict[str, np.ndarray]]] = [[], []]
    errors: list[BaseException] = []
    clients = [SharedMemoryModelClient(server.grpc_url, "churn") for _ in range(2)]
    start = threading.Barrier(2)

    def work(k: int) -> None:
        try:
            start.wait()
            for _ in range(6):
                got[k].append(clients[k].infer_arrays(batches[k]))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not errors, errors
        assert clients[0].region_prefix != clients[1].region_prefix
        assert not set(clients[0].region_names) & set(clients[1].region_names)
        for k in range(2):
            assert len(got[k]) == 6
            for result in got[k]:
                assert_same(result, want[k])
    finally:
        for c in clients:
            c.close()


def test_close_leaves_no_region_on_the_server_or_in_dev_shm(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    client = SharedMemoryModelClient(server.grpc_url, "churn")
    client.infer_arrays(request_arrays(scorer, customers.head(20)))
    prefix = client.region_prefix
    assert len(files(prefix)) == 2 and len(registered(server, prefix)) == 2
    client.close()
    assert files(prefix) == [] and not registered(server, prefix)
    client.close()  # twice is harmless


def test_garbage_collected_client_releases_its_regions(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    client = SharedMemoryModelClient(server.grpc_url, "churn")
    client.infer_arrays(request_arrays(scorer, customers.head(20)))
    prefix = client.region_prefix
    assert files(prefix)
    del client
    gc.collect()
    assert files(prefix) == [] and not registered(server, prefix)


class _Watched(grpcclient.InferenceServerClient):
    """The real client, counting the server's refusals to unregister a region a request still holds."""

    refused = 0

    def unregister_system_shared_memory(self, region_name: str = "", headers: Any = None, client_timeout: Any = None):
        try:
            return super().unregister_system_shared_memory(region_name, headers, client_timeout)
        except InferenceServerException as exc:
            self.refused += "in use" in str(exc)
            raise


def test_regions_released_while_the_server_still_holds_them_are_unregistered(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    # Triton refuses to unregister an input region until the request holding it is released (after its answer).
    arrays = request_arrays(scorer, pl.concat([customers, customers]).head(4096))
    want = plain(server, arrays)
    blobs = {
        name: serialize_byte_tensor(a).item() if a.dtype == object else np.ascontiguousarray(a).tobytes()
        for name, a in arrays.items()
    }
    raw = _Watched(server.grpc_url)
    try:
        for attempt in range(40):
            regions = Regions(raw, region_prefix())
            region = regions.get("in", sum(len(b) for b in blobs.values()), floor=PAGE)
            inputs, offset = [], 0
            for name, blob in blobs.items():
                region.view[offset : offset + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
                datatype = "BYTES" if arrays[name].dtype == object else "FP32"
                tensor = grpcclient.InferInput(name, list(arrays[name].shape), datatype)
                tensor.set_shared_memory(region.name, len(blob), offset)
                inputs.append(tensor)
                offset += len(blob)
            answers: list[Any] = []
            answered = threading.Event()

            def answer(
                result: Any, error: Any, answers: list[Any] = answers, answered: threading.Event = answered
            ) -> None:
                answers.append((result, error))
                answered.set()

            raw.async_infer("churn", inputs, callback=answer)
            threading.Event().wait(0.002 * (attempt % 5))
            regions.release()
            assert files(regions.prefix) == [] and not registered(server, regions.prefix)
            assert answered.wait(60)
            result, error = answers[0]
            if raw.refused:  # the server held the region when it was released: the answer is whole
                assert error is None, error
                assert_same({n: result.as_numpy(n) for n in want}, want)
                break
    finally:
        raw.close()
    assert raw.refused, "no release met a request in flight in 40 tries"


def client_process(server: TritonServer, customers: pl.DataFrame, tmp_path: Path, then: str) -> Any:
    """Run a process whose shared-memory client scores five rows, prints its region prefix and region count,
    then runs ``then``; its completed process."""
    customers.head(5).write_parquet(tmp_path / "rows.parquet")
    script = (
        textwrap.dedent(
            f"""
        import os, signal
        import polars as pl
        from clients import SharedMemoryModelClient
        client = SharedMemoryModelClient({server.grpc_url!r}, "churn")
        client.infer(pl.read_parquet({str(tmp_path / "rows.parquet")!r}))
        print(client.region_prefix, len(client.region_names), flush=True)
        """
        )
        + then
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2]
    )


def test_process_that_exits_without_close_leaves_nothing(
    server: TritonServer, customers: pl.DataFrame, tmp_path: Path
) -> None:
    done = client_process(server, customers, tmp_path, "")
    assert done.returncode == 0, done.stderr
    prefix, count = done.stdout.split()
    assert prefix.startswith("finscore-") and count == "2"
    assert files(prefix) == [] and not registered(server, prefix)


def test_regions_of_a_killed_process_are_reaped_by_the_next_client(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame, tmp_path: Path
) -> None:
    # No finalizer runs: as a scan killed with kill -9.
    done = client_process(server, customers, tmp_path, "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert done.returncode == -9, done.stderr
    prefix = done.stdout.split()[0]
    assert len(files(prefix)) == 2 and len(registered(server, prefix)) == 2  # left behind
    with SharedMemoryModelClient(server.grpc_url, "churn") as client:
        assert_same(
            client.infer_arrays(request_arrays(scorer, customers.head(3))),
            plain(server, request_arrays(scorer, customers.head(3))),
        )
        assert files(prefix) == [] and not registered(server, prefix)
        assert len(client.region_names) == 2  # its own are untouched


def test_wrong_dtype_is_the_same_domain_error_and_the_next_request_succeeds(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(10))
    num = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    bad = {**arrays, num: arrays[num].astype(np.int32)}
    # Raw tensors, as a client that cannot encode sends them (through the twin, numbers are cast here).
    with ModelClient(server.grpc_url, "churn", features=False) as client, pytest.raises(InvalidInputError) as over_grpc:
        client.infer_arrays(bad)
    with SharedMemoryModelClient(server.grpc_url, "churn", features=False) as client:
        with pytest.raises(InvalidInputError) as over_shm:
            client.infer_arrays(bad)
        assert type(over_shm.value) is type(over_grpc.value)
        assert str(over_shm.value) == str(over_grpc.value)
        assert num in str(over_shm.value) and "INT32" in str(over_shm.value)
        assert_same(client.infer_arrays(arrays), plain(server, arrays))


def test_values_the_model_rejects_come_back_as_invalid_input(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(2))
    num = next(c.name for c in scorer.schema.columns if c.wire == "FP32")
    arrays[num] = np.array([[np.inf], [1.0]], np.float32)
    for features in (False, True):  # refused by the raw model, or by the client before it reaches the twin
        with SharedMemoryModelClient(server.grpc_url, "churn", features=features) as client:
            with pytest.raises(InvalidInputError, match="infinite"):
                client.infer_arrays(arrays)
            arrays_ok = {k: v[1:] for k, v in arrays.items()}
            assert client.infer_arrays(arrays_ok)["churn_probability"].shape == (1, 1)


def test_regions_the_server_forgot_are_registered_again(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame
) -> None:
    arrays = request_arrays(scorer, customers.head(30))
    with SharedMemoryModelClient(server.grpc_url, "churn") as client:
        client.infer_arrays(arrays)
        with grpcclient.InferenceServerClient(server.grpc_url) as raw:
            raw.unregister_system_shared_memory()  # as after a server restart
        assert not registered(server, client.region_prefix)
        assert_same(client.infer_arrays(arrays), plain(server, arrays))
        assert len(registered(server, client.region_prefix)) == 2


def test_server_that_cannot_map_the_region_gets_one_clear_sentence(
    server: TritonServer, scorer: ChurnScorer, customers: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = shared_memory_module()
    create = shm.create_shared_memory_region

    def invisible(name: str, key: str, size: int) -> object:
        handle = create(name, key, size)
        os.unlink(SHM / key.lstrip("/"))  # as for a server in a container that does not share /dev/shm
        return handle

    monkeypatch.setattr(shm, "create_shared_memory_region", invisible)
    with SharedMemoryModelClient(server.grpc_url, "churn") as client:
        with pytest.raises(SharedMemoryUnavailableError, match="--no-shared-memory") as info:
            client.infer_arrays(request_arrays(scorer, customers.head(3)))
        assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
        assert client.region_names == [] and not registered(server, client.region_prefix)


def test_close_survives_a_server_that_has_gone_away(
    trained: ChurnTrainResult, scorer: ChurnScorer, customers: pl.DataFrame, tmp_path: Path
) -> None:
    own = TritonServer(trained.path.parent.parent, ports=ServerPorts.free(), log_path=tmp_path / "t.log")
    with own:
        client = SharedMemoryModelClient(own.grpc_url, "churn", timeout=10)
        client.infer_arrays(request_arrays(scorer, customers.head(5)))
        prefix = client.region_prefix
    assert not own.alive() and files(prefix)
    client.close()
    assert files(prefix) == []


def test_a_down_server_is_named_as_over_grpc() -> None:
    with SharedMemoryModelClient(f"127.0.0.1:{free_port()}", "churn", timeout=5) as client:
        with pytest.raises(ServerUnavailableError, match="no Triton server answers"):
            client.infer_arrays({"tenure": np.zeros((1, 1), np.float32)})
        prefix = client.region_prefix
    assert files(prefix) == []


def _an_address_of_this_machine() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_is_local_and_bulk_client_choice(server: TritonServer) -> None:
    for url in ("127.0.0.1:8001", "localhost:8001", "[::1]:8001", "::1", "127.0.0.2:9", "0.0.0.0:8001"):
        assert is_local(url), url
    for url in ("192.0.2.1:8001", "[2001:db8::1]:8001", "203.0.113.7", "no-such-host.invalid:8001", ""):
        assert not is_local(url), url
    mine = _an_address_of_this_machine()
    if mine is not None:
        assert is_local(f"{mine}:8001")
    with bulk_client(server.grpc_url, "churn") as auto:
        assert isinstance(auto, SharedMemoryModelClient)
    with bulk_client(server.grpc_url, "churn", shared_memory=False) as forced:
        assert type(forced) is ModelClient
    with bulk_client("192.0.2.1:8001", "churn") as remote:
        assert type(remote) is ModelClient
