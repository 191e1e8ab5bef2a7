"""Triton python-backend shell for the face_verify model: all logic lives in ``engine``."""

import triton_python_backend_utils as pb_utils

from engine.families.face import FaceBackendModel, FaceVerifyScorer


class TritonPythonModel(FaceBackendModel):
    pb_utils = pb_utils
    scorer_class = FaceVerifyScorer
