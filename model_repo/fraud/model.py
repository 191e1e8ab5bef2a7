"""Triton python-backend shell for the fraud model: all logic lives in ``engine``."""

import triton_python_backend_utils as pb_utils

from engine.families.fraud.serving import FraudBackendModel


class TritonPythonModel(FraudBackendModel):
    pb_utils = pb_utils
