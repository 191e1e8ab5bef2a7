"""The scoring step of the served ``fraud`` model: stateful, so requests are read in arrival order.

Each request of a dynamic batch is checked against the state as the requests before it left it, then
recorded; the batch's feature rows are scored in one call at the end. A bad request gets its error and
changes nothing; the others are scored. A label report is answered ``recorded``, a forget request (``finscore
forget``) ``forgotten`` or ``unknown`` per card; the cards are never logged. Reading, errors, the garbage
collector freeze after load and the snapshot at unload are :class:`engine.serving.model.BackendModel`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.families.fraud.scorer import ANSWERS, FraudScorer
from engine.serving.model import BackendModel, as_output

__all__ = ["FraudBackendModel"]


class FraudBackendModel(BackendModel):
    """Subclassed by ``model_repo/fraud/model.py``, which sets ``pb_utils``."""

    scorer_class = FraudScorer

    def _recorded(self, decisions: list[str], names: list[str]) -> Any:
        """The answer to a label report or a forget request: the asked outputs, empty, and ``decisions``."""
        n = len(decisions)
        dims = self.output_dims
        filled = {
            "fraud_probability": lambda: np.full(n, np.nan, dtype=np.float32),
            "reason_codes": lambda: np.full((n, *dims["reason_codes"]), b"", dtype=object),
            "decision": lambda: np.array([d.encode("utf-8") for d in decisions], dtype=object),
            "features": lambda: np.full((n, *dims["features"]), np.nan),
            "decision_code": lambda: np.array([ANSWERS.index(d) for d in decisions], dtype=np.int32),
            "reason_index": lambda: np.full((n, *dims["reason_index"]), -1, dtype=np.int32),
        }
        tensors = [self.pb_utils.Tensor(k, as_output(filled[k](), dims[k])) for k in names]
        return self.pb_utils.InferenceResponse(output_tensors=tensors)

    def score(self, requests: list[Any], read: list[tuple[int, dict[str, np.ndarray]]], responses: list[Any]) -> None:
        scored: list[tuple[int, np.ndarray]] = []
        sampled: list[dict[str, object]] = []  # the scored requests' rows, for the sample when it is on
        for i, columns in read:
            try:
                rows = self.scorer.validate(columns)
                if rows["kind"] == "label":
                    self.scorer.report(rows)
                    responses[i] = self._recorded(
                        ["recorded"] * len(rows["transaction_id"]), self.requested(requests[i])
                    )
                elif rows["kind"] == "forget":
                    responses[i] = self._recorded(self.scorer.forget(rows), self.requested(requests[i]))
                else:
                    scored.append((i, self.scorer.features(rows)))
                    if self.sample is not None:
                        sampled.append(rows)
            except Exception as exc:
                self.fail(responses, [i], exc, "reading the request")
        if not scored:
            return
        try:
            wanted = {i: self.requested(requests[i]) for i, _ in scored}
            union = {name for names in wanted.values() for name in names} | self.watched()
            outputs = self.scorer.score_features(np.vstack([x for _, x in scored]), outputs=union)
            self.answer(responses, [(i, len(x)) for i, x in scored], outputs, wanted)
        except Exception as exc:
            self.fail(responses, [i for i, _ in scored], exc, "scoring")
            return
        self._watching(self._observe_requests, sampled, outputs)

    def _observe_requests(self, sampled: list[dict[str, object]], outputs: dict[str, np.ndarray]) -> None:
        """:meth:`observe` of the scored requests' rows joined (read one request at a time, in order)."""
        names = [k for k, v in sampled[0].items() if isinstance(v, list | np.ndarray)] if sampled else []  # not 'kind'
        self.observe({k: np.concatenate([np.asarray(r[k]) for r in sampled]) for k in names}, outputs)
