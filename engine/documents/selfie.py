"""A selfie against the photo printed on an identity document: the face models' embeddings and the served
``face_verify`` version's calibrated threshold, in this process.

The selfie must hold exactly one face (none or several is one sentence, before any page is read). On the page the
largest face is the document's photo; a page without one gets no match and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InvalidInputError, ModelNotReadyError
from engine.families.face.embedding import embed_images, load_pipeline
from engine.families.face.pipeline import FacePipeline
from engine.families.face.scorer import PARAMS_FILE
from engine.serving.repository import ModelRepository

__all__ = ["SelfieCheck", "SelfieMatcher"]

#: The served model whose newest version gives the pipeline and the threshold.
VERIFY_MODEL = "face_verify"


@dataclass(frozen=True)
class SelfieCheck:
    """The selfie against one page: the similarity of the two faces and whether it reaches the threshold (None for
    both when the page shows no face)."""

    similarity: float | None
    match: bool
    threshold: float
    reason: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"similarity": self.similarity, "match": self.match, "threshold": self.threshold, "reason": self.reason}


class SelfieMatcher:
    """The selfie's embedding, ready to be compared with each page's photo."""

    def __init__(self, pipeline: FacePipeline, threshold: float, selfie: np.ndarray) -> None:
        self.pipeline = pipeline
        self.threshold = threshold
        self.selfie = selfie

    @classmethod
    def load(cls, selfie: Path, repo: ModelRepository) -> SelfieMatcher:
        """The newest ``face_verify`` version of ``repo`` and the one face of ``selfie``."""
        try:
            version = repo.latest(VERIFY_MODEL)
        except ModelNotReadyError:
            msg = f"--selfie needs the face models in {repo.root}: run `finscore face train` first"
            raise ModelNotReadyError(msg) from None
        threshold = float(json.loads((version / PARAMS_FILE).read_text(encoding="utf-8"))["threshold"])
        pipeline = load_pipeline(version)
        vectors, faces = embed_images([selfie], model=pipeline)
        if faces[0] != 1:
            found = "no face" if faces[0] == 0 else f"{faces[0]} faces"
            msg = f"--selfie {selfie.name}: {found} found where one is expected; send a photo of one person"
            raise InvalidInputError(msg)
        return cls(pipeline, threshold, vectors[0])

    def check(self, page: Path) -> SelfieCheck:
        """The selfie against the largest face on ``page``."""
        vectors, faces = embed_images([page], model=self.pipeline)
        if faces[0] == 0:
            return SelfieCheck(None, False, self.threshold, "no photo of a face was found on the document")
        similarity = float(vectors[0] @ self.selfie)
        match = similarity >= self.threshold
        reason = None if match else "the selfie does not match the document's photo"
        return SelfieCheck(round(similarity, 4), match, self.threshold, reason)
