"""The floor: a python-backend model that does nothing but what every served model must do.

``finscore bench`` serves it beside the model under test, as ``<model>_floor`` with that model's config (its
inputs, outputs, batching and instances): it reads every input of each request into NumPy, as finscore's
``BackendModel`` does, and answers constant outputs of the declared types and shapes, those the request asks for
(all when it names none), as finscore's models do. Its latency and throughput are the serving stack's own limit
on this machine for that model's requests (gRPC, Triton's queue and batcher, the stub's shared memory, tensors in
and out); the model's distance from it is the model's own work.

Copied into a temporary repository as ``1/model.py`` (:mod:`bench.floor`); imports only NumPy and the backend.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

_TYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_UINT8": np.uint8,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.batching = int(config.get("max_batch_size", 0)) > 0
        # A variable dimension (-1) answers one element: the floor of a list output.
        self.outputs = [
            (o["name"], _TYPES[o["data_type"]], [max(int(d), 1) for d in o["dims"]]) for o in config["output"]
        ]
        self._answers = {}

    def _answer(self, rows, names):
        key = (rows, names)
        if key not in self._answers:
            tensors = []
            for name, dtype, dims in self.outputs:
                if names and name not in names:
                    continue
                shape = ([rows] if self.batching else []) + dims
                value = np.full(shape, b"", dtype=object) if dtype is np.object_ else np.zeros(shape, dtype)
                tensors.append((name, value))
            self._answers[key] = tensors
        return [pb_utils.Tensor(name, value) for name, value in self._answers[key]]

    def execute(self, requests):
        responses = []
        for request in requests:
            given = {t.name(): t.as_numpy() for t in request.inputs()}
            rows = len(next(iter(given.values()))) if given and self.batching else 1
            # The outputs the request asks for (all when it names none), as finscore's models answer.
            names = frozenset(request.requested_output_names())
            responses.append(pb_utils.InferenceResponse(output_tensors=self._answer(rows, names)))
        return responses
