"""Typed gRPC clients over ``tritonclient``: discover a model's inputs, send rows, get named outputs.

>>> # client = ModelClient("127.0.0.1:8001", "churn")
>>> # client.infer({"tenure": [3], "Contract": ["Month-to-month"], ...})["churn_probability"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from clients.errors import map_error
from clients.tensors import InputSpec, decode_outputs, encode_inputs
from clients.tls import Tls

__all__ = ["AsyncModelClient", "ModelClient"]

DEFAULT_URL = "127.0.0.1:8001"


def _specs(metadata: Any) -> tuple[list[InputSpec], list[str]]:
    inputs = [InputSpec(t.name, t.datatype) for t in metadata.inputs]
    outputs = [t.name for t in metadata.outputs]
    return inputs, outputs


def _request(arrays: dict[str, np.ndarray], outputs: list[str], module: Any) -> tuple[list[Any], list[Any]]:
    infer_inputs = []
    for name, arr in arrays.items():
        datatype = "BYTES" if arr.dtype == object else np_to_triton_dtype(arr.dtype)
        tensor = module.InferInput(name, list(arr.shape), datatype)
        tensor.set_data_from_numpy(arr)
        infer_inputs.append(tensor)
    return infer_inputs, [module.InferRequestedOutput(name) for name in outputs]


class ModelClient:
    """A synchronous client for one served model."""

    def __init__(
        self, url: str = DEFAULT_URL, model: str = "churn", *, timeout: float | None = 30.0, tls: Tls | None = None
    ) -> None:
        self.url = url
        self.model = model
        self.timeout = timeout
        self.tls = tls
        self._client = grpcclient.InferenceServerClient(url=url, **(tls.client_kwargs() if tls else {}))
        self._inputs: list[InputSpec] | None = None
        self._outputs: list[str] = []

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            raise map_error(exc, url=self.url, model=self.model, tls=self.tls is not None) from None

    @property
    def inputs(self) -> list[InputSpec]:
        """The model's inputs as the server describes them (read once)."""
        if self._inputs is None:
            self._inputs, self._outputs = _specs(self._call(self._client.get_model_metadata, self.model))
        return self._inputs

    @property
    def outputs(self) -> list[str]:
        self.inputs  # noqa: B018 - loads the metadata
        return self._outputs

    def parameters(self) -> dict[str, str]:
        """The model's config parameters (e.g. ``id_column``)."""
        config = self._call(self._client.get_model_config, self.model, as_json=True)["config"]
        return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}

    def id_column(self) -> str | None:
        """The column that identifies a row in this model's outputs, if the model names one."""
        return self.parameters().get("id_column") or None

    def served_version(self) -> str:
        """The newest version of the model the server has loaded (what an unversioned request runs)."""
        versions = list(self._call(self._client.get_model_metadata, self.model).versions)
        return max(versions, key=int) if versions else ""

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self.model))
        except InferenceServerException:
            return False

    def infer_arrays(
        self, arrays: dict[str, np.ndarray], *, request_id: str = "", outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Send arrays already shaped ``[rows, 1]``; raw outputs (BYTES as bytes). ``outputs`` asks for some of
        the model's outputs only (the model may then skip the work of the others)."""
        names = list(outputs) if outputs else self.outputs
        inputs, requested = _request(arrays, names, grpcclient)
        result = self._call(
            self._client.infer,
            self.model,
            inputs,
            outputs=requested,
            request_id=request_id,
            client_timeout=self.timeout,
        )
        return {name: result.as_numpy(name) for name in names}

    def infer(self, data: Any) -> dict[str, np.ndarray]:
        """Score a dict, DataFrame or Arrow table; outputs by name, text decoded, ``[rows]`` where dims are [1]."""
        return decode_outputs(self.infer_arrays(encode_inputs(data, self.inputs, model=self.model)))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncModelClient:
    """The asyncio twin of :class:`ModelClient`."""

    def __init__(
        self, url: str = DEFAULT_URL, model: str = "churn", *, timeout: float | None = 30.0, tls: Tls | None = None
    ) -> None:
        self.url = url
        self.model = model
        self.timeout = timeout
        self.tls = tls
        self._client = aioclient.InferenceServerClient(url=url, **(tls.client_kwargs() if tls else {}))
        self._inputs: list[InputSpec] | None = None
        self._outputs: list[str] = []

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except InferenceServerException as exc:
            raise map_error(exc, url=self.url, model=self.model, tls=self.tls is not None) from None

    async def load_metadata(self) -> list[InputSpec]:
        if self._inputs is None:
            self._inputs, self._outputs = _specs(await self._call(self._client.get_model_metadata(self.model)))
        return self._inputs

    async def infer_arrays(self, arrays: dict[str, np.ndarray], *, request_id: str = "") -> dict[str, np.ndarray]:
        await self.load_metadata()
        inputs, outputs = _request(arrays, self._outputs, aioclient)
        result = await self._call(
            self._client.infer(self.model, inputs, outputs=outputs, request_id=request_id, client_timeout=self.timeout)
        )
        return {name: result.as_numpy(name) for name in self._outputs}

    async def infer(self, data: Any) -> dict[str, np.ndarray]:
        specs = await self.load_metadata()
        return decode_outputs(await self.infer_arrays(encode_inputs(data, specs, model=self.model)))

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncModelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
