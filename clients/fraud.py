"""A client for the stateful ``fraud`` model: score authorizations, report fraud labels later.

>>> # with FraudClient("127.0.0.1:8001") as fraud:
>>> #     fraud.authorize({"transaction_id": ["t1"], "card_id": ["c9"], "terminal_id": ["m4"],
>>> #                      "amount": [25.0], "timestamp": [1_700_000_000_000_000]})["decision"]
>>> #     fraud.report(["t1"], [1])
>>> #     fraud.forget(["c9"])  # erasure: [True], the server held the card and no longer does
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clients.grpc import DEFAULT_URL, ModelClient
from clients.tensors import columns_of, decode_outputs
from clients.tls import Tls
from engine.errors import InvalidInputError

__all__ = ["AUTHORIZATION_FIELDS", "FraudClient"]

#: What an authorization carries (``terminal_id`` may be left out); ``timestamp`` is µs since the Unix epoch.
AUTHORIZATION_FIELDS = {
    "transaction_id": object,
    "card_id": object,
    "terminal_id": object,
    "amount": np.float64,
    "timestamp": np.int64,
}
SCORES = ("fraud_probability", "reason_codes", "decision")
#: Cards per forget request (the model's max batch size is 4096).
FORGET_ROWS = 1024


def _column(name: str, values: Any, dtype: Any) -> np.ndarray:
    seq = values if isinstance(values, (list, tuple, np.ndarray)) else [values]
    if dtype is object:
        return np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in seq], dtype=object).reshape(
            -1, 1
        )
    try:
        return np.asarray(seq, dtype=dtype).reshape(-1, 1)
    except (TypeError, ValueError):
        msg = f"column {name!r} cannot be read as {np.dtype(dtype).name}"
        raise InvalidInputError(msg) from None


class FraudClient(ModelClient):
    """The ``fraud`` model over gRPC."""

    def __init__(
        self, url: str = DEFAULT_URL, model: str = "fraud", *, timeout: float | None = 30.0, tls: Tls | None = None
    ) -> None:
        super().__init__(url, model, timeout=timeout, tls=tls)

    def authorize(self, data: Any, *, features: bool = False) -> dict[str, np.ndarray]:
        """Score authorizations (a dict, DataFrame or Arrow table) in order; the server records each.
        ``features=True`` also returns the feature row each was scored on."""
        columns = columns_of(data)
        arrays = {
            name: _column(name, columns[name], dtype) for name, dtype in AUTHORIZATION_FIELDS.items() if name in columns
        }
        outputs = [*SCORES, "features"] if features else list(SCORES)
        return decode_outputs(self.infer_arrays(arrays, outputs=outputs))

    def report(self, transaction_ids: Sequence[Any], labels: Sequence[int]) -> None:
        """Report fraud labels (1 fraud, 0 genuine) of authorizations scored earlier."""
        arrays = {
            "transaction_id": _column("transaction_id", list(transaction_ids), object),
            "label": _column("label", list(labels), np.int32),
        }
        self.infer_arrays(arrays, outputs=["decision"])

    def forget(self, cards: Sequence[Any]) -> list[bool]:
        """Erase cards from the server's state (GDPR erasure, what ``finscore forget`` sends): True for each
        card the server held. The card's next authorization is scored as its first."""
        held: list[bool] = []
        for start in range(0, len(cards), FORGET_ROWS):
            part = list(cards[start : start + FORGET_ROWS])
            arrays = {
                "card_id": _column("card_id", part, object),
                "forget": np.ones((len(part), 1), dtype=np.int32),
            }
            decision = decode_outputs(self.infer_arrays(arrays, outputs=["decision"]))["decision"]
            held.extend(str(d) == "forgotten" for d in np.asarray(decision).ravel())
        return held

    def __enter__(self) -> FraudClient:
        return self
