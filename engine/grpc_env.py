"""gRPC's client set up before anything imports ``grpc``: the one place finscore chooses it.

grpcio (1.85 measured) runs a client call's I/O on threads of its EventEngine by default, so a blocking call
hops threads about four times. Against the bundled server, one churn request at a time:

==============================  ===========  ================  ===================
client                          requests/s   client CPU / call  context switches
==============================  ===========  ================  ===================
EventEngine (grpcio default)    1,480-1,620  165-176 µs        4.4 per call
poller in the calling thread    1,780-1,890  105 µs            1.0 per call
perf_analyzer 2.51 (C++)        1,820-1,880  -                 -
==============================  ===========  ================  ===================

At 16 concurrent requests the two clients measured the same (within this machine's noise). So finscore turns
the ``event_engine_client`` experiment off through ``GRPC_EXPERIMENTS``, which grpcio reads once, when it
is first imported: :func:`lean_client` runs when ``engine`` is imported, and ``clients`` and ``bench``
import ``engine`` before anything else. An application that imported ``grpc`` before finscore keeps
grpcio's default; a ``GRPC_EXPERIMENTS`` that already names the experiment is left as it is.
"""

from __future__ import annotations

import os
import sys

__all__ = ["EXPERIMENT", "lean_client"]

EXPERIMENT = "event_engine_client"


def lean_client(environ: dict[str, str] | None = None) -> bool:
    """Add ``-event_engine_client`` to ``GRPC_EXPERIMENTS`` unless ``grpc`` is already imported or the variable
    already names the experiment; whether it was added.

    Parameters
    ----------
    environ
        The environment to change (default ``os.environ``; tests pass their own).
    """
    env = os.environ if environ is None else environ
    current = env.get("GRPC_EXPERIMENTS", "")
    if "grpc" in sys.modules or EXPERIMENT in current:
        return False
    env["GRPC_EXPERIMENTS"] = ",".join(filter(None, (current, f"-{EXPERIMENT}")))
    return True
