"""The served face models' body: :class:`engine.serving.model.BackendModel` with two rules for personal data.

- Photos and embeddings are never kept: the scored-rows sample (``FINSCORE_SAMPLE``) is off for these models
  whatever the setting says, and no error sentence or log line carries a photo's bytes.
- Each ``face_verify`` decision is appended to the audit log before it is answered, the two photos named only
  by keyed pseudonyms of their SHA-256 (:meth:`engine.security.trail.Trail.subject`): whoever holds the key and
  a photo can find its lines, nobody else can. A decision whose line cannot be written is not answered
  (INTERNAL). A refused request decides nothing and records nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from engine.security.trail import Trail, new_run_id
from engine.serving.model import BackendModel

__all__ = ["FaceBackendModel"]


class FaceBackendModel(BackendModel):
    """Subclassed by ``model_repo/face_*/model.py``, which set ``pb_utils`` and ``scorer_class``."""

    trail: Trail | None = None

    def initialize(self, args: dict[str, str]) -> None:
        super().initialize(args)
        if self.sample is not None:
            self.sample.close()
            self.sample = None
        self.version = args["model_version"]
        if any(spec.name == "match" for spec in self.scorer.OUTPUTS):
            self.trail = Trail.from_env()
            # Request ids ``<run>/<n>``: this instance's run and the verifications it has answered, from 0.
            self.run = new_run_id()
            self.answered = 0

    def answer(
        self,
        responses: list[Any],
        sizes: list[tuple[int, int]],
        outputs: dict[str, np.ndarray],
        wanted: dict[int, list[str]],
    ) -> None:
        if self.trail is not None:
            self.audit(outputs)
        super().answer(responses, sizes, outputs, wanted)

    def audit(self, outputs: dict[str, np.ndarray]) -> None:
        """One ``decision`` line per verification: its request id, both photos' pseudonyms, the decision and the
        similarity."""
        assert self.trail is not None
        subject = self.trail.subject
        n = len(outputs["digest_a"])
        frame = pl.DataFrame(
            {
                "request_id": [f"{self.run}/{i}" for i in range(self.answered, self.answered + n)],
                "subject": [subject(f"photo:{d}") for d in outputs["digest_a"]],
                "subject_b": [subject(f"photo:{d}") for d in outputs["digest_b"]],
                "decision": ["match" if m else "no_match" for m in np.asarray(outputs["match"]).reshape(-1)],
                "score": np.round(np.asarray(outputs["similarity"], dtype=np.float64).reshape(-1), 4),
            }
        )
        self.trail.decisions(self.model_name, self.version, frame, minted=("request_id", "subject", "subject_b"))
        self.answered += n
