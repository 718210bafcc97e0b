"""Triton Python-backend model: serves a resnet-deploy artifact with our runtime Session.

Copied as ``<model>/1/model.py`` by ``resnet-export triton --backend python`` (and ``resnet-serve``).
It runs inside Triton's Python-backend stub process, where ``triton_python_backend_utils`` exists;
the artifact and its manifest sit beside it (``model.onnx``, ``model.onnx.json``).

Triton checks every request's dtype, shape and batch against ``config.pbtxt`` before it reaches
``execute``; the Session checks again (NaN/Inf too), and a request it refuses gets its own error
while the rest of the dynamic batch is answered.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# The stub's embedded interpreter ignores PYTHONPATH; resnet-serve names its package's folder here
# (the same name as resnet_deploy.serve.server.PACKAGE_PATH_VAR). Elsewhere resnet-deploy is installed.
if (_path := os.environ.get("RESNET_DEPLOY_PACKAGE_PATH")) and _path not in sys.path:
    sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from resnet_deploy.deploy.triton import THREADS_PARAMETER  # noqa: E402
from resnet_deploy.errors import DeployError  # noqa: E402
from resnet_deploy.runtime import open_session  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        threads = (config.get("parameters") or {}).get(THREADS_PARAMETER, {}).get("string_value")
        self.session = open_session(folder / "model.onnx", provider="cpu", threads=int(threads) if threads else None)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests: list) -> list:
        arrays, answers = [], [None] * len(requests)
        for i, request in enumerate(requests):
            x = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            try:
                arrays.append((i, self.session.check_input(x)))
            except DeployError as exc:
                answers[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
        if arrays:
            batch = np.concatenate([x for _, x in arrays]) if len(arrays) > 1 else arrays[0][1]
            try:  # the batcher never exceeds max_batch_size, which the writer kept within the artifact's
                logits = self.session.run(batch)
            except DeployError as exc:
                for i, _ in arrays:
                    answers[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
            else:
                start = 0
                for i, x in arrays:
                    part = logits[start:start + len(x)]
                    start += len(x)
                    answers[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, part)])
        return answers

    def finalize(self) -> None:
        self.session.close()
