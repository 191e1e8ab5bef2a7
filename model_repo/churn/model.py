"""Triton python-backend shell for the churn model: all logic lives in ``engine``."""

import triton_python_backend_utils as pb_utils

from engine.families.churn import ChurnScorer
from engine.serving.model import BackendModel


class TritonPythonModel(BackendModel):
    pb_utils = pb_utils
    scorer_class = ChurnScorer
