"""Session fixtures: the demo model and its exported artifacts, built once per test session under tmp.

The demo model trains once (about 25 s on two cores) into the user cache directory, as it would
for a user; artifacts go to pytest's session tmp folder, never the working directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    warnings.filterwarnings("ignore", message="no --weights given")


@pytest.fixture(scope="session")
def demo18():
    """The demo ResNet-18 (trained on digits:train) as a LoadedModel."""
    from resnet_deploy.weights import load_model

    return load_model("resnet18", "demo")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """A session-wide folder for exported artifacts shared by tests."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def demo18_onnx(demo18, artifacts) -> Path:
    """The demo ResNet-18 exported to FP32 ONNX (with its manifest), gated on digits:eval."""
    from resnet_deploy.data import open_source
    from resnet_deploy.export.onnx import onnx_from_torch

    path = artifacts / "demo18.onnx"
    onnx_from_torch(demo18, path, eval_source=open_source("digits", split="eval"))
    return path


@pytest.fixture(scope="session")
def digits_png(artifacts) -> Path:
    """digits:eval (540 real handwritten digits) as 8x8 grayscale PNG files in class folders 0..9."""
    from PIL import Image

    from resnet_deploy.data import digits_split

    root = artifacts / "digits-png"
    images, labels = digits_split("eval")
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def demo18_uint8_onnx(demo18, artifacts) -> Path:
    """The demo ResNet-18 exported with raw uint8 NHWC RGB input (normalised in the graph), gated on digits:eval."""
    from resnet_deploy.data import open_source
    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch

    path = artifacts / "demo18-uint8.onnx"
    onnx_from_torch(demo18, path, config=OnnxConfig(input_format="uint8"), eval_source=open_source("digits", split="eval"))
    return path


@pytest.fixture
def demo18_fake_plan(tmp_path, demo18_onnx) -> Path:
    """A TensorRT engine's manifest as ``resnet-export trt`` derives it from the demo ONNX (profile 1..8..32,
    version-compatible), beside stand-in bytes: for deployment writers and servers that never open the plan."""
    from resnet_deploy.manifest import BatchRange, manifest_path, read_manifest

    parent = read_manifest(demo18_onnx)
    path = tmp_path / "demo18.fp16.plan"
    path.write_bytes(b"engine bytes stand-in")
    manifest = parent.derive(batch=BatchRange(1, 8, 32), parity=None, precision="fp16",
                             build={"tensorrt": "10.13.0", "gpu": "NVIDIA H200", "compute_capability": "9.0",
                                    "version_compatible": True},
                             details={**parent.details, "onnx_parity": parent.parity})
    manifest_path(path).write_text(manifest.to_json())
    return path
