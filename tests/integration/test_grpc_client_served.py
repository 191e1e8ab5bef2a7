"""The lean gRPC client (``engine.grpc_env``) against the real server: one thread hop per call, not four."""

from __future__ import annotations

import os
import subprocess
import sys

from engine.serving.server import TritonServer

_CALLS = """
import resource
from tritonclient.grpc import service_pb2, service_pb2_grpc
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel({url!r}))
live = service_pb2.ServerLiveRequest()
for _ in range(50):
    stub.ServerLive(live)
before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
for _ in range(400):
    assert stub.ServerLive(live).live
print((resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before) / 400)
"""


def _waits_per_call(url: str, first: str) -> float:
    """Voluntary context switches per unary call in a fresh interpreter that imports ``first`` first, with no
    ``GRPC_EXPERIMENTS`` of its own (this process's was set when it imported ``engine``)."""
    code = f"import {first}\nimport grpc\n" + _CALLS.format(url=url)
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return float(done.stdout.strip())


def test_a_finscore_process_waits_once_per_call(server: TritonServer) -> None:
    lean = _waits_per_call(server.grpc_url, "clients")
    default = _waits_per_call(server.grpc_url, "grpc")  # grpcio's own default: the EventEngine client
    assert lean < 1.5, f"{lean:.2f} waits per call with finscore's client set up"
    assert default > lean + 1, f"grpcio's default waits {default:.2f} per call, finscore's {lean:.2f}"
