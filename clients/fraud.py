"""A client for the stateful ``fraud`` model: score authorizations, report fraud labels later.

What the model takes and answers is read from the served model, not restated here: the authorization fields
and their datatypes from its metadata's inputs, the scores from its outputs, and the rows one request may
carry from its config's ``max_batch_size``. The client names only its own vocabulary: the ``label`` and
``forget`` inputs that make a request a label report or an erasure, the ``features`` output that
``features=True`` asks for, and the ``decision`` an erasure answers (``forgotten`` for a card the server held).
Where the model answers the decision and the reasons as INT32 indices too (its config's ``decode`` parameter
names what they index), the client asks for those and hands back the text: numbers cost the server less.
An authorization's ``timestamp`` is µs since the Unix epoch; ``terminal_id`` may be left out.

>>> # with FraudClient("127.0.0.1:8001") as fraud:
>>> #     fraud.authorize({"transaction_id": ["t1"], "card_id": ["c9"], "terminal_id": ["m4"],
>>> #                      "amount": [25.0], "timestamp": [1_700_000_000_000_000]})["decision"]
>>> #     fraud.report(["t1"], [1])
>>> #     fraud.forget(["c9"])  # erasure: [True], the server held the card and no longer does
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clients.grpc import DEFAULT_URL, ModelClient
from clients.tensors import Codes, columns_of, decode_outputs, typed_column
from clients.tls import Tls
from engine.errors import NotFoundError, ServerError

__all__ = ["FraudClient"]

#: The inputs that turn a request into a label report or an erasure instead of an authorization.
LABEL, FORGET = "label", "forget"
#: The output ``authorize(features=True)`` adds: the feature row each authorization was scored on.
FEATURES = "features"
#: The output an erasure answers, and its value for a card the server held.
DECISION, FORGOTTEN = "decision", "forgotten"


@dataclass(frozen=True)
class _Served:
    """The fraud model as the server describes it (read once per client)."""

    inputs: dict[str, str]  # every input's Triton datatype, in the metadata's order
    outputs: tuple[str, ...]
    rows: int  # the most rows one request may carry; 0 when the model does not batch
    #: INT32 outputs asked for in place of text ones (decision, reasons), read back as the text
    codes: Codes

    @property
    def authorization(self) -> dict[str, str]:
        return {name: datatype for name, datatype in self.inputs.items() if name not in (LABEL, FORGET)}

    @property
    def scores(self) -> list[str]:
        return [name for name in self.outputs if name != FEATURES and name not in self.codes.decoding]


class FraudClient(ModelClient):
    """The ``fraud`` model over gRPC."""

    def __init__(
        self, url: str = DEFAULT_URL, model: str = "fraud", *, timeout: float | None = 30.0, tls: Tls | None = None
    ) -> None:
        super().__init__(url, model, timeout=timeout, tls=tls)
        self._served: _Served | None = None

    def _model(self) -> _Served:
        if self._served is None:
            config = self._model_config()
            try:
                codes = Codes.from_parameter(self._parameters_of(config).get("decode", ""), outputs=self.outputs)
            except ValueError:
                msg = f"model {self.model!r} at {self.url} publishes an unreadable 'decode' parameter in its config"
                raise ServerError(msg) from None
            self._served = _Served(
                inputs={spec.name: spec.datatype for spec in self.inputs},
                outputs=tuple(self.outputs),
                rows=int(config.get("max_batch_size", 0) or 0),
                codes=codes,
            )
        return self._served

    def _needs(self, *, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> _Served:
        """The served model, checked to have ``inputs`` and ``outputs`` (those a request kind relies on)."""
        served = self._model()
        for kind, names, have in (("input", inputs, served.inputs), ("output", outputs, served.outputs)):
            missing = [name for name in names if name not in have]
            if missing:
                msg = (
                    f"model {self.model!r} at {self.url} has no {kind} {missing[0]!r}: it is not finscore's fraud model"
                )
                raise NotFoundError(msg)
        return served

    @property
    def authorization_fields(self) -> dict[str, str]:
        """What an authorization carries, by name, with each field's Triton datatype (from the model's metadata)."""
        return self._model().authorization

    def authorize(self, data: Any, *, features: bool = False) -> dict[str, np.ndarray]:
        """Score authorizations (a dict, DataFrame or Arrow table) in order; the server records each.
        ``features=True`` also returns the feature row each was scored on."""
        served = self._needs(outputs=[FEATURES] if features else [])
        columns = columns_of(data)
        arrays = {
            name: typed_column(name, columns[name], datatype)
            for name, datatype in served.authorization.items()
            if name in columns
        }
        outputs = [*served.scores, FEATURES] if features else served.scores
        # Numbers travel in place of the decision's and the reasons' text (a model trained before they were
        # answered has none: its text is asked for).
        answer = self.infer_arrays(arrays, outputs=served.codes.outputs(outputs))
        return decode_outputs(served.codes.decode(answer))

    def report(self, transaction_ids: Sequence[Any], labels: Sequence[int]) -> None:
        """Report fraud labels (1 fraud, 0 genuine) of authorizations scored earlier."""
        served = self._needs(inputs=["transaction_id", LABEL], outputs=[DECISION])
        arrays = {
            "transaction_id": typed_column("transaction_id", list(transaction_ids), served.inputs["transaction_id"]),
            LABEL: typed_column(LABEL, list(labels), served.inputs[LABEL]),
        }
        self.infer_arrays(arrays, outputs=[DECISION])

    def forget(self, cards: Sequence[Any]) -> list[bool]:
        """Erase cards from the server's state (GDPR erasure, what ``finscore forget`` sends): True for each
        card the server held. The card's next authorization is scored as its first."""
        served = self._needs(inputs=["card_id", FORGET], outputs=[DECISION])
        step = served.rows or max(len(cards), 1)
        held: list[bool] = []
        for start in range(0, len(cards), step):
            part = list(cards[start : start + step])
            arrays = {
                "card_id": typed_column("card_id", part, served.inputs["card_id"]),
                FORGET: typed_column(FORGET, [1] * len(part), served.inputs[FORGET]),
            }
            decision = decode_outputs(self.infer_arrays(arrays, outputs=[DECISION]))[DECISION]
            held.extend(str(d) == FORGOTTEN for d in np.asarray(decision).ravel())
        return held

    def __enter__(self) -> FraudClient:
        return self
