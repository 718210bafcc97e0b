"""The embeddable runtime: one Session interface over ONNX Runtime and TensorRT.

Imports numpy only; Pillow when ``classify`` first decodes an image; onnxruntime, or tensorrt
and cuda-python, when a session of that kind opens. Never torch, onnx, onnxsim, onnxscript or
modelopt, at any depth (tests/runtime/test_isolation.py enforces it): this is what a Jetson
application embeds.

    from resnet_deploy.runtime import open_session

    with open_session("model.onnx", provider="cpu", threads=2) as session:
        logits = session.run(batch)                 # validated numpy batch -> (N, classes) float32
        top5 = session.classify(["cat.jpg"])        # decoded and preprocessed as the manifest says
"""

from __future__ import annotations

from resnet_deploy.runtime.backends import open_session
from resnet_deploy.runtime.session import Session, topk_labels

__all__ = ["Session", "open_session", "topk_labels"]
