"""A client for the ``recommender`` model: a list of products per customer, with scores and reasons.

The profile fields a request may carry (for a customer the model has not seen, or a profile newer than the
one it was trained with) and their datatypes are read from the served model's metadata. A customer's list may
be shorter than ``k``: only products the suitability rules allow are ever returned.

>>> # with RecommenderClient("127.0.0.1:8001") as rec:
>>> #     rec.recommend(["K0000042"], k=5)[0]            # [Recommendation(product_id=..., score=..., reason=...)]
>>> #     rec.recommend(["new-1"], profile={"risk_tolerance": [3], "horizon_years": [10], "income_band": ["middle"]})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clients.grpc import DEFAULT_URL, ModelClient
from clients.tensors import decode_outputs, typed_column
from clients.tls import Tls
from engine.errors import InvalidInputError

__all__ = ["Recommendation", "RecommenderClient", "recommendation_lists", "request_arrays"]


@dataclass(frozen=True)
class Recommendation:
    product_id: str
    score: float
    reason: str


class RecommenderClient(ModelClient):
    """The ``recommender`` model over gRPC."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str = "recommender",
        *,
        timeout: float | None = 30.0,
        tls: Tls | None = None,
    ) -> None:
        super().__init__(url, model, timeout=timeout, tls=tls)

    @property
    def profile_fields(self) -> dict[str, str]:
        """The profile fields a request may carry, with their Triton datatypes (from the model's metadata)."""
        return {s.name: s.datatype for s in self.inputs if s.name not in ("customer_id", "k")}

    def arrays(
        self, customers: Sequence[str], *, k: int | None = None, profile: Mapping[str, Sequence[Any]] | None = None
    ) -> dict[str, np.ndarray]:
        """The request's input arrays: ``customer_id``, ``k`` when given, and the profile fields given."""
        types = {s.name: s.datatype for s in self.inputs}
        return request_arrays(types, customers, k=k, profile=profile, model=self.model)

    def recommend(
        self, customers: Sequence[str], *, k: int | None = None, profile: Mapping[str, Sequence[Any]] | None = None
    ) -> list[list[Recommendation]]:
        """One list per customer, best first."""
        if not customers:
            return []
        return recommendation_lists(self.infer_arrays(self.arrays(customers, k=k, profile=profile)), len(customers))

    def __enter__(self) -> RecommenderClient:
        return self

    def reload(self, *, timeout: float | None = 300.0) -> list[str]:
        """Load the model again from the server's repository (Triton's repository API), so that its memory
        holds what the version files hold now: what ``finscore forget`` asks once it has erased customers from
        them. The versions served afterwards; ``[]`` when the model is not loaded (it is then left unloaded)."""
        if not self._call(self._client.is_model_ready, self.model):
            return []
        self._call(self._client.load_model, self.model, client_timeout=timeout)
        return sorted(self._call(self._client.get_model_metadata, self.model).versions, key=int)


def request_arrays(
    types: Mapping[str, str],
    customers: Sequence[str],
    *,
    k: int | None = None,
    profile: Mapping[str, Sequence[Any]] | None = None,
    model: str = "recommender",
) -> dict[str, np.ndarray]:
    """A request's ``[rows, 1]`` arrays for a recommender whose inputs have the datatypes ``types`` (by name, as
    its metadata or its scorer lists them): ``customer_id``, ``k`` when given, and the profile fields given, one
    value per customer each. What :meth:`RecommenderClient.arrays` sends, and ``finscore recommend --local``
    hands the scorer."""
    arrays = {"customer_id": typed_column("customer_id", list(customers), types["customer_id"])}
    if k is not None:
        arrays["k"] = typed_column("k", [k] * len(customers), types["k"])
    for name, values in (profile or {}).items():
        if name not in types or name in arrays:
            fields = ", ".join(n for n in types if n not in ("customer_id", "k"))
            msg = f"{name!r} is not a profile field of model {model!r} ({fields})"
            raise InvalidInputError(msg)
        column = typed_column(name, values, types[name])
        if len(column) != len(customers):
            msg = f"profile field {name!r} has {len(column)} values for {len(customers)} customers"
            raise InvalidInputError(msg)
        arrays[name] = column
    return arrays


def recommendation_lists(outputs: Mapping[str, np.ndarray], rows: int) -> list[list[Recommendation]]:
    """A recommender's outputs (``product_ids``, ``scores``, ``reasons``: ``[rows, n]``, padded with ``""``) as
    one list per request row, best first; text as it comes from the wire (bytes) or from a scorer (str)."""
    out = decode_outputs(outputs)
    # decode_outputs flattens [rows, 1]: a list of one is still a list
    ids_, scores_, reasons_ = (np.asarray(out[n]).reshape(rows, -1) for n in ("product_ids", "scores", "reasons"))
    lists = []
    for ids, scores, reasons in zip(ids_, scores_, reasons_, strict=True):
        lists.append([Recommendation(p, float(s), r) for p, s, r in zip(ids, scores, reasons, strict=True) if p != ""])
    return lists
