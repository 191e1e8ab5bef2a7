"""The server-configuration sweep: instances × dynamic-batching delay × max batch size, as model_analyzer does.

Each configuration is loaded into the running server with Triton's own config override (``load_model`` with
``config=``, which the explicit model-control mode finscore's server runs in allows), measured with one closed
loop, and the one with the highest throughput whose p99 is within the budget (and with no error) is chosen.
The model's own config is loaded back at the end. :func:`apply` writes the choice into a ``config.pbtxt``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from engine.errors import InvalidInputError, ServerError

__all__ = ["apply", "choose", "sweep", "with_settings"]


def with_settings(config: dict[str, Any], *, instances: int, delay_us: int, max_batch: int) -> dict[str, Any]:
    """A copy of a model config (Triton's JSON form) with these three settings."""
    out = json.loads(json.dumps(config))
    groups = out.get("instance_group") or [{"kind": "KIND_CPU"}]
    out["instance_group"] = [{**{k: v for k, v in groups[0].items() if k != "count"}, "count": instances}]
    batching = {**out.get("dynamic_batching", {}), "max_queue_delay_microseconds": delay_us}
    # Triton fills in a preferred size equal to the max batch size; it must not exceed the new one.
    preferred = [int(b) for b in batching.pop("preferred_batch_size", []) if int(b) <= max_batch]
    out["dynamic_batching"] = {**batching, **({"preferred_batch_size": preferred} if preferred else {})}
    out["max_batch_size"] = max_batch
    return out


def choose(configs: Sequence[dict[str, Any]], budget_p99_ms: float) -> dict[str, Any] | None:
    """The configuration with the highest throughput among those with p99 ≤ budget and no error; None if none."""
    fitting = [c for c in configs if c["errors"] == 0 and c["p99_ms"] <= budget_p99_ms and c["throughput"] > 0]
    return max(fitting, key=lambda c: c["throughput"]) if fitting else None


def sweep(
    url: str,
    model: str,
    measure: Callable[[], dict[str, Any]],
    *,
    instances: Sequence[int],
    delays_us: Sequence[int],
    max_batches: Sequence[int],
    budget_p99_ms: float,
    on_config: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every combination with ``measure()`` (a closed loop returning throughput, p99_ms and errors)."""
    client = grpcclient.InferenceServerClient(url=url)
    original = client.get_model_config(model, as_json=True)["config"]
    configs = []
    try:
        for n, delay, batch in itertools.product(instances, delays_us, max_batches):
            if on_config is not None:
                on_config(f"instances={n} delay_us={delay} max_batch={batch}")
            cfg = with_settings(original, instances=n, delay_us=delay, max_batch=batch)
            try:
                client.load_model(model, config=json.dumps(cfg))
            except InferenceServerException as exc:
                msg = f"the server could not load {model} with instances={n} delay_us={delay} max_batch={batch}: "
                raise ServerError(msg + (exc.message() or str(exc)).strip()) from None
            figures = measure()
            configs.append({"instances": n, "delay_us": delay, "max_batch": batch, **figures})
    finally:
        client.load_model(model)  # back to the config on disk
        client.close()
    return {"budget_p99_ms": budget_p99_ms, "configs": configs, "chosen": choose(configs, budget_p99_ms)}


_PATTERNS = {
    "max_batch": (r"^max_batch_size: \d+$", "max_batch_size: {}"),
    "instances": (r"count: \d+(?= kind:)", "count: {}"),
    "delay_us": (r"max_queue_delay_microseconds: \d+", "max_queue_delay_microseconds: {}"),
}


def apply(config_path: Path, chosen: dict[str, Any]) -> None:
    """Write the chosen instances, delay and max batch size into a ``config.pbtxt`` finscore rendered."""
    text = config_path.read_text(encoding="utf-8")
    for key, (pattern, replacement) in _PATTERNS.items():
        text, n = re.subn(pattern, replacement.format(int(chosen[key])), text, count=1, flags=re.MULTILINE)
        if n != 1:
            msg = f"{config_path} has no line matching {pattern!r}: it was not written by finscore; edit it by hand"
            raise InvalidInputError(msg)
    config_path.write_text(text, encoding="utf-8")
