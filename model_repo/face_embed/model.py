"""Triton python-backend shell for the face_embed model: all logic lives in ``engine``."""

import triton_python_backend_utils as pb_utils

from engine.families.face import FaceBackendModel, FaceEmbedScorer


class TritonPythonModel(FaceBackendModel):
    pb_utils = pb_utils
    scorer_class = FaceEmbedScorer
