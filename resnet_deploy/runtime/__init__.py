"""The embeddable runtime: one Session interface over ONNX Runtime and TensorRT.

Imports numpy (and Pillow for ``classify``) only; onnxruntime, tensorrt and cuda-python are
imported when a session of that kind opens. Never torch, onnx, onnxsim or modelopt, at any
depth (tests/runtime/test_isolation.py enforces it): this is what a Jetson application embeds.
"""

from __future__ import annotations

from resnet_deploy.runtime.session import Session, open_session

__all__ = ["Session", "open_session"]
