"""Triton python-backend shell for the assistant model: all logic lives in ``engine``."""

import triton_python_backend_utils as pb_utils

from engine.families.assistant import AssistantScorer
from engine.serving.model import BackendModel


class TritonPythonModel(BackendModel):
    pb_utils = pb_utils
    scorer_class = AssistantScorer
