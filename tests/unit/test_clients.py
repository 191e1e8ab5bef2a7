from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from tritonclient.utils import InferenceServerException

from clients import InputSpec, decode_outputs, encode_inputs, map_error
from engine.errors import (
    InvalidInputError,
    ModelNotReadyError,
    NotFoundError,
    ServerError,
    ServerUnavailableError,
)

SPECS = [InputSpec("fee", "FP32"), InputSpec("plan", "BYTES")]


@pytest.mark.parametrize(
    ("status", "message", "error", "text"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ServerUnavailableError, "finscore serve"),
        ("StatusCode.INVALID_ARGUMENT", "unexpected datatype", InvalidInputError, "rejected the request"),
        ("StatusCode.NOT_FOUND", "Request for unknown model", NotFoundError, "not served"),
        ("StatusCode.UNAVAILABLE", "model is not ready", ModelNotReadyError, "not ready"),
        ("StatusCode.INTERNAL", "boom", ServerError, "failed"),
        ("StatusCode.UNAVAILABLE", "Ssl handshake failed: OK", ServerError, "TLS with 127.0.0.1:1 failed: the hand"),
    ],
)
def test_server_errors_map_to_domain_errors(status: str, message: str, error: type, text: str) -> None:
    exc = InferenceServerException(msg=message, status=status)
    mapped = map_error(exc, url="127.0.0.1:1", model="churn")
    assert type(mapped) is error
    assert text in str(mapped)


@pytest.mark.parametrize(
    "data",
    [
        {"fee": [1.5, None], "plan": ["a", None]},
        pl.DataFrame({"fee": [1.5, None], "plan": ["a", None]}),
        pd.DataFrame({"fee": [1.5, np.nan], "plan": ["a", None]}),
        pa.table({"fee": [1.5, None], "plan": ["a", None]}),
    ],
    ids=["dict", "polars", "pandas", "arrow"],
)
def test_encode_every_table_kind(data: object) -> None:
    arrays = encode_inputs(data, SPECS, model="m")
    assert arrays["fee"].dtype == np.float32 and arrays["fee"].shape == (2, 1)
    assert arrays["fee"][0, 0] == 1.5 and np.isnan(arrays["fee"][1, 0])
    assert arrays["plan"].dtype == object and arrays["plan"][:, 0].tolist() == [b"a", b""]


def test_encode_errors_name_the_column() -> None:
    with pytest.raises(InvalidInputError, match="needs column 'plan'"):
        encode_inputs({"fee": [1.0]}, SPECS, model="m")
    with pytest.raises(InvalidInputError, match="'fee' must hold numbers"):
        encode_inputs({"fee": ["high"], "plan": ["a"]}, SPECS, model="m")
    with pytest.raises(InvalidInputError, match="has 2 rows but the others have 1"):
        encode_inputs({"fee": [1.0], "plan": ["a", "b"]}, SPECS, model="m")
    with pytest.raises(InvalidInputError, match="cannot score a int"):
        encode_inputs(3, SPECS, model="m")


def test_decode_outputs() -> None:
    out = decode_outputs({"p": np.array([[0.5]], dtype=np.float32), "r": np.array([[b"a", b"b", b""]], dtype=object)})
    assert out["p"].shape == (1,)
    assert out["r"].tolist() == [["a", "b", ""]]
    more = decode_outputs(
        {"d": np.array([[b"approve"], [b"review"]], dtype=object), "e": np.empty((0, 3), dtype=object)}
    )
    assert more["d"].tolist() == ["approve", "review"] and more["d"].dtype == object
    assert more["e"].shape == (0, 3)


def test_other_numeric_datatypes_keep_their_type() -> None:
    specs = [InputSpec("n", "INT64"), InputSpec("d", "FP64"), InputSpec("b", "BOOL")]
    arrays = encode_inputs({"n": [1, 2], "d": [0.5, 1.5], "b": [True, False]}, specs, model="m")
    assert [arrays[k].dtype for k in ("n", "d", "b")] == [np.int64, np.float64, np.bool_]
    with pytest.raises(InvalidInputError, match="cannot be read as INT64"):
        encode_inputs({"n": ["x"], "d": [1.0], "b": [True]}, specs, model="m")


class _Status:
    def __init__(self, names: list[str]) -> None:
        self.regions = dict.fromkeys(names)


class _Server:
    """What reap_stale_regions asks of a tritonclient: the registered regions, and unregistering one."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.unregistered: list[str] = []

    def get_system_shared_memory_status(self, client_timeout: float) -> _Status:
        return _Status(self.names)

    def unregister_system_shared_memory(self, name: str, client_timeout: float) -> None:
        self.unregistered.append(name)


class _Busy(_Server):
    """A server that refuses to unregister, as Triton does while a request still holds the region."""

    def __init__(self, refusals: int, message: str = "it is currently in use.") -> None:
        super().__init__([])
        self.refusals = refusals
        self.message = message
        self.calls = 0

    def unregister_system_shared_memory(self, name: str, client_timeout: float) -> None:
        self.calls += 1
        if self.calls <= self.refusals:
            raise InferenceServerException(f"Cannot unregister shared memory region '{name}', {self.message}")
        super().unregister_system_shared_memory(name, client_timeout)


def test_a_region_still_in_use_is_unregistered_once_the_server_lets_go() -> None:
    from clients.regions import unregister

    server = _Busy(refusals=3)
    unregister(server, "r-in")  # type: ignore[arg-type]
    assert server.calls == 4 and server.unregistered == ["r-in"]


def test_unregistering_gives_up_on_any_other_refusal_at_once() -> None:
    from clients.regions import unregister

    server = _Busy(refusals=1, message="it is not registered.")
    with pytest.raises(InferenceServerException, match="not registered"):
        unregister(server, "r-in")  # type: ignore[arg-type]
    assert server.calls == 1 and server.unregistered == []


def test_unregistering_a_region_held_for_good_stops_at_the_release_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import clients.regions as regions

    monkeypatch.setattr(regions, "_RELEASE_TIMEOUT", 0.05)
    server = _Busy(refusals=10**9)
    with pytest.raises(InferenceServerException, match="in use"):
        regions.unregister(server, "r-in")  # type: ignore[arg-type]
    assert 2 < server.calls < 50 and server.unregistered == []


def test_only_dead_processes_of_this_pid_namespace_are_reaped(tmp_path: Path) -> None:
    from clients.regions import pid_namespace, reap_stale_regions

    ns = pid_namespace()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(dead.stdout)
    names = {
        "dead": f"finscore-{ns}-{gone}-abcd1234-in",
        "alive": f"finscore-{ns}-{os.getpid()}-abcd1234-in",
        "other_container": f"finscore-{int(ns) + 1 if ns.isdigit() else 1}-{gone}-abcd1234-in",
        "not_ours": f"someone-{ns}-{gone}-abcd1234-in",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    server = _Server([names["dead"], names["alive"], names["other_container"], f"finscore-{ns}-{gone}-ffff0000-out"])
    reaped = reap_stale_regions(server, shm_dir=str(tmp_path))  # type: ignore[arg-type]
    assert reaped == sorted([names["dead"], f"finscore-{ns}-{gone}-ffff0000-out"])
    assert server.unregistered == sorted(reaped)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "dead")
