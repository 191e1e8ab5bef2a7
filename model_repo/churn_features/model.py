"""Triton python-backend shell for the churn model fed feature tensors: all logic lives in ``engine``."""

import triton_python_backend_utils as pb_utils

from engine.families.churn.twin import ChurnTwinScorer
from engine.serving.model import BackendModel


class TritonPythonModel(BackendModel):
    pb_utils = pb_utils
    scorer_class = ChurnTwinScorer
