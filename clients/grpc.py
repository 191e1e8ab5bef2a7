"""Typed gRPC clients over ``tritonclient``: discover a model's inputs, send rows, get named outputs.

:class:`ModelClient` and :class:`AsyncModelClient` share one base, :class:`BaseModelClient`, which holds
everything but the calls that go over the wire: the model, its address and TLS, the input specs read from the
model's metadata, encoding rows into tensors and decoding the answer, the config's parameters and the served
version. Each client only makes the calls (``tritonclient.grpc`` or ``tritonclient.grpc.aio``) and hands the
answers to the base, so the two cannot drift apart again.

>>> # client = ModelClient("127.0.0.1:8001", "churn")
>>> # client.infer({"tenure": [3], "Contract": ["Month-to-month"], ...})["churn_probability"]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from clients.errors import gave_up, map_error, retry_reason
from clients.features import FeatureRoute, can_encode
from clients.tensors import InputSpec, decode_outputs, encode_inputs
from clients.tls import Tls
from engine.errors import FinscoreError, NotFoundError, UsageError
from engine.families.twin import twin_name

__all__ = ["AsyncModelClient", "BaseModelClient", "ModelClient"]

DEFAULT_URL = "127.0.0.1:8001"

T = TypeVar("T")


class BaseModelClient:
    """What a client of one served model knows and computes, whichever way its calls travel.

    Subclasses set :attr:`wire` (the ``tritonclient`` module their calls go through) and make the calls;
    the methods here turn the server's answers into finscore's types.

    Parameters
    ----------
    url
        ``host:port`` of the server's gRPC endpoint.
    model
        The served model's name.
    timeout
        Seconds an inference may take before the client gives up (None: no limit).
    retry_for
        Seconds an inference the server could not take (server restarting, model reloading: see
        :func:`clients.errors.retry_reason`) is sent again, with backoff, before the client gives up; 0: never.
        Default: the ``retry_for`` setting (``FINSCORE_RETRY_FOR``, 30).
    tls
        How to reach the server over TLS; None speaks plaintext gRPC.
    features
        Send the rows as one feature tensor to the model's ``<model>_features`` twin, encoded here with the
        kernels training used (:mod:`clients.features`), and decode its answer to the raw model's: what
        the caller sees is the same, the server does a fraction of the work. ``None`` (the default) does so
        when the server has the twin loaded; ``True`` requires it; ``False`` sends raw columns.
    """

    #: ``tritonclient.grpc`` or ``tritonclient.grpc.aio``: where ``InferInput`` and the server client come from.
    wire: ClassVar[ModuleType]

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str = "churn",
        *,
        timeout: float | None = 30.0,
        tls: Tls | None = None,
        retry_for: float | None = None,
        features: bool | None = None,
    ) -> None:
        self.url = url
        self.model = model
        self.features = features
        self.timeout = timeout
        self.tls = tls
        if retry_for is None:
            from engine.settings import resolve_settings

            retry_for = float(resolve_settings().retry_for)
        self.retry_for = retry_for
        self._client = self.wire.InferenceServerClient(url=url, **(tls.client_kwargs() if tls else {}))
        self._inputs: list[InputSpec] | None = None
        self._outputs: list[str] = []
        #: The route through the twin once decided (None: raw columns); unset until the first inference.
        self._route: FeatureRoute | None = None
        self._routed = False

    # --- the server's answers, read ---------------------------------------------------------------------------

    def _error(self, exc: InferenceServerException) -> FinscoreError:
        """The domain error for a failed call (the one place the clients map them: :func:`map_error`)."""
        return map_error(exc, url=self.url, model=self.model, tls=self.tls is not None)

    def _retry_delay(self, exc: InferenceServerException, started: float | None, delay: float) -> tuple[float, float]:
        """(when the retries started, how long to wait now) for a failed inference, or raise its error: at once
        when it would fail again, once ``retry_for`` seconds have passed since the first failure otherwise."""
        reason = retry_reason(exc, seen=self._inputs is not None) if self.retry_for > 0 else None
        if reason is None:
            raise self._error(exc) from None
        now = time.monotonic()
        started = now if started is None else started
        left = started + self.retry_for - now
        if left <= 0:
            raise gave_up(
                exc, reason, seconds=self.retry_for, url=self.url, model=self.model, tls=self.tls is not None
            ) from None
        return started, min(delay, left)

    def _take_metadata(self, metadata: Any) -> list[InputSpec]:
        """Keep the input specs and output names of the model's metadata; the input specs."""
        self._inputs = [InputSpec(t.name, t.datatype) for t in metadata.inputs]
        self._outputs = [t.name for t in metadata.outputs]
        return self._inputs

    @staticmethod
    def _parameters_of(config: dict[str, Any]) -> dict[str, str]:
        """The string parameters of a model config read ``as_json`` (its ``config`` part)."""
        return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}

    @staticmethod
    def _newest_version(metadata: Any) -> str:
        """The newest version the metadata lists (what an unversioned request runs); "" when none."""
        versions = list(metadata.versions)
        return max(versions, key=int) if versions else ""

    def _take_route(self, ready: bool, parameters: dict[str, str] | None) -> FeatureRoute | None:
        """Decide (once) how rows travel, from whether the twin is ready and its config's parameters."""
        route = None
        if self.features and not can_encode():
            msg = "encoding rows for a feature-tensor twin needs Polars: install finscore[backend], or features=False"
            raise UsageError(msg)
        if ready and parameters is not None and parameters.get("encoding") and can_encode():
            route = FeatureRoute.from_parameters(self.model, parameters)
        elif self.features:
            twin = twin_name(self.model)
            msg = (
                f"model {twin!r} (the feature-tensor twin of {self.model!r}) is not ready on {self.url}: "
                f"retrain {self.model} or pass features=False"
            )
            raise NotFoundError(msg)
        self._route, self._routed = route, True
        return route

    # --- a request, built, and its answer, read ---------------------------------------------------------------

    def _encode(self, data: Any, specs: list[InputSpec]) -> dict[str, np.ndarray]:
        """Arrays shaped ``[rows, 1]`` for the model's inputs ``specs``."""
        return encode_inputs(data, specs, model=self.model)

    def _request(self, arrays: dict[str, np.ndarray], names: Sequence[str]) -> tuple[list[Any], list[Any]]:
        """The ``InferInput`` tensors for ``arrays`` and the ``InferRequestedOutput`` for each of ``names``."""
        infer_inputs = []
        for name, arr in arrays.items():
            datatype = "BYTES" if arr.dtype == object else np_to_triton_dtype(arr.dtype)
            tensor = self.wire.InferInput(name, list(arr.shape), datatype)
            tensor.set_data_from_numpy(arr)
            infer_inputs.append(tensor)
        return infer_inputs, [self.wire.InferRequestedOutput(name) for name in names]

    @staticmethod
    def _arrays_of(result: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
        return {name: result.as_numpy(name) for name in names}


class ModelClient(BaseModelClient):
    """A synchronous client for one served model (its calls go through ``tritonclient.grpc``)."""

    wire = grpcclient

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            raise self._error(exc) from None

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, made again with backoff (50 ms doubling to 1 s) while its failure is one a server heals
        (:meth:`_retry_delay`)."""
        started: float | None = None
        delay = 0.05
        while True:
            try:
                return attempt()
            except InferenceServerException as exc:
                started, wait = self._retry_delay(exc, started, delay)
            time.sleep(wait)
            delay = min(delay * 2, 1.0)

    @property
    def inputs(self) -> list[InputSpec]:
        """The model's inputs as the server describes them (read once)."""
        if self._inputs is None:
            return self._take_metadata(self._call(self._client.get_model_metadata, self.model))
        return self._inputs

    @property
    def outputs(self) -> list[str]:
        """The model's output names, in the order of its metadata (read once)."""
        self.inputs  # noqa: B018 - loads the metadata
        return self._outputs

    def _model_config(self, model: str | None = None) -> dict[str, Any]:
        """The model's (or ``model``'s) config as the server reports it now (JSON form, the ``config`` part)."""
        return dict(self._call(self._client.get_model_config, model or self.model, as_json=True)["config"])

    def parameters(self) -> dict[str, str]:
        """The model's config parameters (e.g. ``id_column``)."""
        return self._parameters_of(self._model_config())

    def id_column(self) -> str | None:
        """The column that identifies a row in this model's outputs, if the model names one."""
        return self.parameters().get("id_column") or None

    def served_version(self) -> str:
        """The newest version of the model the server has loaded (what an unversioned request runs)."""
        return self._newest_version(self._call(self._client.get_model_metadata, self.model))

    def max_batch_size(self) -> int:
        """The most rows one request may carry (the config's ``max_batch_size``; 0: the model does not batch)."""
        return int(self._model_config().get("max_batch_size", 0) or 0)

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self.model))
        except InferenceServerException:
            return False

    def feature_route(self) -> FeatureRoute | None:
        """The route through the model's feature-tensor twin, or None for raw columns (decided once)."""
        if self._routed or self.features is False:
            return self._route
        twin = twin_name(self.model)
        try:
            ready = bool(self._call(self._client.is_model_ready, twin))
            parameters = self._parameters_of(self._model_config(twin)) if ready else None
        except FinscoreError:
            if self.features:
                raise
            return None  # the server cannot say now: raw columns for this request, ask again next time
        return self._take_route(ready, parameters)

    def infer_arrays(
        self, arrays: dict[str, np.ndarray], *, request_id: str = "", outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Send arrays already shaped ``[rows, 1]``; raw outputs (BYTES as bytes). ``outputs`` asks for some of
        the model's outputs only (the model may then skip the work of the others). Through the model's
        feature-tensor twin when :meth:`feature_route` says so, with the same answer."""
        names = list(outputs) if outputs else self.outputs
        route = self.feature_route()
        if route is None:
            return self._send(self.model, arrays, names, request_id)
        return route.decode(self._send(route.model, route.encode(arrays), route.outputs(names), request_id))

    def _send(
        self, model: str, arrays: dict[str, np.ndarray], names: list[str], request_id: str
    ) -> dict[str, np.ndarray]:
        """One inference of ``model`` (retried while the server heals); its outputs ``names`` as arrays."""
        inputs, requested = self._request(arrays, names)
        result = self._retrying(
            lambda: self._client.infer(
                model, inputs, outputs=requested, request_id=request_id, client_timeout=self.timeout
            )
        )
        return self._arrays_of(result, names)

    def infer(self, data: Any, *, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Score a dict, DataFrame or Arrow table; outputs by name, text decoded, ``[rows]`` where dims are [1].
        ``outputs`` asks for some of the model's outputs only."""
        return decode_outputs(self.infer_arrays(self._encode(data, self.inputs), outputs=outputs))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncModelClient(BaseModelClient):
    """The asyncio twin of :class:`ModelClient` (its calls go through ``tritonclient.grpc.aio``): the same
    methods, awaited; ``await load_metadata()`` is what the ``inputs`` property reads."""

    wire = aioclient

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except InferenceServerException as exc:
            raise self._error(exc) from None

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """:meth:`ModelClient._retrying`, awaited."""
        started: float | None = None
        delay = 0.05
        while True:
            try:
                return await attempt()
            except InferenceServerException as exc:
                started, wait = self._retry_delay(exc, started, delay)
            await asyncio.sleep(wait)
            delay = min(delay * 2, 1.0)

    async def load_metadata(self) -> list[InputSpec]:
        """The model's inputs as the server describes them (read once)."""
        if self._inputs is None:
            return self._take_metadata(await self._call(self._client.get_model_metadata(self.model)))
        return self._inputs

    async def output_names(self) -> list[str]:
        """The model's output names, in the order of its metadata (read once)."""
        await self.load_metadata()
        return list(self._outputs)

    async def _model_config(self, model: str | None = None) -> dict[str, Any]:
        config = await self._call(self._client.get_model_config(model or self.model, as_json=True))
        return dict(config["config"])

    async def parameters(self) -> dict[str, str]:
        """The model's config parameters (e.g. ``id_column``)."""
        return self._parameters_of(await self._model_config())

    async def id_column(self) -> str | None:
        """The column that identifies a row in this model's outputs, if the model names one."""
        return (await self.parameters()).get("id_column") or None

    async def served_version(self) -> str:
        """The newest version of the model the server has loaded (what an unversioned request runs)."""
        return self._newest_version(await self._call(self._client.get_model_metadata(self.model)))

    async def is_ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self.model))
        except InferenceServerException:
            return False

    async def infer_arrays(
        self, arrays: dict[str, np.ndarray], *, request_id: str = "", outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Send arrays already shaped ``[rows, 1]``; raw outputs (BYTES as bytes). ``outputs`` asks for some of
        the model's outputs only (the model may then skip the work of the others)."""
        names = list(outputs) if outputs else await self.output_names()
        route = await self.feature_route()
        if route is None:
            return await self._send(self.model, arrays, names, request_id)
        return route.decode(await self._send(route.model, route.encode(arrays), route.outputs(names), request_id))

    async def feature_route(self) -> FeatureRoute | None:
        """:meth:`ModelClient.feature_route`, awaited."""
        if self._routed or self.features is False:
            return self._route
        twin = twin_name(self.model)
        try:
            ready = bool(await self._call(self._client.is_model_ready(twin)))
            parameters = self._parameters_of(await self._model_config(twin)) if ready else None
        except FinscoreError:
            if self.features:
                raise
            return None
        return self._take_route(ready, parameters)

    async def _send(
        self, model: str, arrays: dict[str, np.ndarray], names: list[str], request_id: str
    ) -> dict[str, np.ndarray]:
        inputs, requested = self._request(arrays, names)
        result = await self._retrying(
            lambda: self._client.infer(
                model, inputs, outputs=requested, request_id=request_id, client_timeout=self.timeout
            )
        )
        return self._arrays_of(result, names)

    async def infer(self, data: Any, *, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Score a dict, DataFrame or Arrow table; outputs by name, text decoded, ``[rows]`` where dims are [1].
        ``outputs`` asks for some of the model's outputs only."""
        specs = await self.load_metadata()
        return decode_outputs(await self.infer_arrays(self._encode(data, specs), outputs=outputs))

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncModelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
