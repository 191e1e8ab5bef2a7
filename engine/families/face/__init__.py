"""Faces: detection, embedding and 1:1 verification of photos, served by Triton, with a calibrated threshold.

The names of the heavy modules are imported when first used (PEP 562), so that the light modules (``pack``, ``gallery``,
``erasure``) import without ONNX Runtime, OpenCV or Polars: the command line builds its parsers from ``pack``, and
``finscore forget`` loads the gallery's erasure store, on an install that may have neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Light (NumPy), and imported now: ``calibrate`` is also a submodule's name, which importing the submodule later
# would bind here in the function's place.
from engine.families.face.calibrate import Calibration, calibrate, calibrate_folder
from engine.families.face.pipeline import FacePipeline, Faces, decode_image

if TYPE_CHECKING:
    from engine.families.face.embedding import embed_images, load_pipeline
    from engine.families.face.scorer import FaceDetectScorer, FaceEmbedScorer, FaceVerifyScorer
    from engine.families.face.serving import FaceBackendModel
    from engine.families.face.train import FaceMetrics, FaceTrainResult, train_face

#: Each public name -> the module that defines it.
_HOME = {
    "embed_images": "embedding",
    "load_pipeline": "embedding",
    "FaceDetectScorer": "scorer",
    "FaceEmbedScorer": "scorer",
    "FaceVerifyScorer": "scorer",
    "FaceBackendModel": "serving",
    "FaceMetrics": "train",
    "FaceTrainResult": "train",
    "train_face": "train",
}

__all__ = [
    "Calibration",
    "FaceBackendModel",
    "FaceDetectScorer",
    "FaceEmbedScorer",
    "FaceMetrics",
    "FacePipeline",
    "FaceTrainResult",
    "FaceVerifyScorer",
    "Faces",
    "calibrate",
    "calibrate_folder",
    "decode_image",
    "embed_images",
    "load_pipeline",
    "train_face",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
