"""The body of the served ``fraud`` model: stateful, so requests are read in arrival order, one at a time.

Each request of a dynamic batch is checked against the state as the requests before it left it, then
recorded; the batch's feature rows are predicted in one call at the end. A bad request gets INVALID_ARG and
changes nothing; the others are scored. A label report is answered ``recorded``, a forget request (``finscore
forget``) ``forgotten`` or ``unknown`` per card; the cards are never logged. The state is snapshotted when the
model is unloaded (a reload or a server stop) and restored by the next load.
"""

from __future__ import annotations

import gc
import traceback
from typing import Any

import numpy as np

from engine.errors import FinscoreError
from engine.families.fraud.redis_state import StateUnavailableError
from engine.families.fraud.scorer import FraudScorer
from engine.serving.model import BackendModel, _as_output

__all__ = ["FraudBackendModel"]


class FraudBackendModel(BackendModel):
    """Subclassed by ``model_repo/fraud/model.py``, which sets ``pb_utils``."""

    scorer_class = FraudScorer

    def initialize(self, args: dict[str, str]) -> None:
        super().initialize(args)
        # The state is a few hundred thousand long-lived objects: a full collection over them stalls a request
        # by tens of milliseconds. Frozen, the collector skips them.
        gc.collect()
        gc.freeze()

    def _inputs(self, request: Any) -> dict[str, np.ndarray]:
        given = self._given(request)
        return {name: given[name] for name in self.input_names if name in given}

    def _recorded(self, decisions: list[str], names: list[str]) -> Any:
        """The answer to a label report or a forget request: every asked output, empty, and ``decisions``."""
        n = len(decisions)
        filled = {
            "fraud_probability": np.full(n, np.nan, dtype=np.float32),
            "reason_codes": np.full((n, *self.output_dims["reason_codes"]), b"", dtype=object),
            "decision": np.array([d.encode("utf-8") for d in decisions], dtype=object),
            "features": np.full((n, *self.output_dims["features"]), np.nan),
        }
        tensors = [self.pb_utils.Tensor(k, _as_output(k, filled[k], self.output_dims[k])) for k in names]
        return self.pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        scored: list[tuple[int, np.ndarray]] = []
        for i, request in enumerate(requests):
            try:
                rows = self.scorer.validate(self._inputs(request))
                if rows["kind"] == "label":
                    self.scorer.report(rows)
                    responses[i] = self._recorded(["recorded"] * len(rows["transaction_id"]), self._requested(request))
                elif rows["kind"] == "forget":
                    responses[i] = self._recorded(self.scorer.forget(rows), self._requested(request))
                else:
                    scored.append((i, self.scorer.features(rows)))
            except StateUnavailableError as exc:
                responses[i] = self._error(str(exc), "UNAVAILABLE")
            except FinscoreError as exc:
                responses[i] = self._error(str(exc), "INVALID_ARG")
            except Exception:
                self._log_error(f"unexpected error reading a fraud request:\n{traceback.format_exc()}")
                responses[i] = self._error("internal error while reading the request", "INTERNAL")
        if not scored:
            return responses
        try:
            wanted = {i: self._requested(requests[i]) for i, _ in scored}
            union = {name for names in wanted.values() for name in names}
            outputs = self.scorer.predict(np.vstack([x for _, x in scored]), outputs=union)
            self._answer(responses, [(i, len(x)) for i, x in scored], outputs, wanted)
        except Exception:
            self._log_error(f"unexpected error scoring fraud:\n{traceback.format_exc()}")
            for i, _ in scored:
                responses[i] = self._error("internal error while scoring", "INTERNAL")
        return responses

    def finalize(self) -> None:
        if self.scorer is not None:
            try:
                self.scorer.snapshot()
            except Exception:
                self._log_error(f"could not snapshot the fraud state:\n{traceback.format_exc()}")
        self.scorer = None
