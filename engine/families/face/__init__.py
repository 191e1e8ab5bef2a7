"""Faces: detection, embedding and 1:1 verification of photos, served by Triton, with a calibrated threshold."""

from engine.families.face.calibrate import Calibration, calibrate, calibrate_folder
from engine.families.face.embedding import embed_images, load_pipeline
from engine.families.face.pipeline import FacePipeline, Faces, decode_image
from engine.families.face.scorer import FaceDetectScorer, FaceEmbedScorer, FaceVerifyScorer
from engine.families.face.serving import FaceBackendModel
from engine.families.face.train import FaceMetrics, FaceTrainResult, train_face

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
