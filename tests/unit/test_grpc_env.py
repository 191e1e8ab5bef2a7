from __future__ import annotations

import subprocess
import sys

import pytest

from engine.grpc_env import EXPERIMENT, lean_client


@pytest.fixture
def grpc_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "grpc", raising=False)


@pytest.mark.usefixtures("grpc_not_imported")
@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, f"-{EXPERIMENT}"),
        ("", f"-{EXPERIMENT}"),
        ("-work_serializer_dispatch", f"-work_serializer_dispatch,-{EXPERIMENT}"),
    ],
)
def test_lean_client_turns_the_event_engine_client_off(before: str | None, after: str) -> None:
    env = {} if before is None else {"GRPC_EXPERIMENTS": before}
    assert lean_client(env) is True
    assert env["GRPC_EXPERIMENTS"] == after


@pytest.mark.usefixtures("grpc_not_imported")
@pytest.mark.parametrize("chosen", [EXPERIMENT, f"-{EXPERIMENT}", f"x,{EXPERIMENT}"])
def test_a_users_own_choice_of_the_experiment_stands(chosen: str) -> None:
    env = {"GRPC_EXPERIMENTS": chosen}
    assert lean_client(env) is False
    assert env == {"GRPC_EXPERIMENTS": chosen}


def test_nothing_changes_once_grpc_is_imported() -> None:
    import grpc  # noqa: F401  (imported: grpcio has read its experiments already)

    env: dict[str, str] = {}
    assert lean_client(env) is False
    assert env == {}


def test_importing_clients_sets_it_before_grpc_and_grpcio_knows_the_experiment() -> None:
    # A fresh interpreter: this one imported grpc long ago. The call fails fast (nothing listens on port 1);
    # it only makes grpcio read its experiments, and it complains on stderr of a name it does not know.
    code = (
        "import os, clients, grpc\n"
        "print(os.environ['GRPC_EXPERIMENTS'])\n"
        "try:\n"
        "    grpc.insecure_channel('127.0.0.1:1').unary_unary('/x/y')(b'', timeout=0.5)\n"
        "except grpc.RpcError as exc:\n"
        "    print(exc.code().name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == [f"-{EXPERIMENT}", "UNAVAILABLE"]
    assert "nknown experiment" not in done.stderr
