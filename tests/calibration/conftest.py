"""Calibration fixtures: digits as PNG files, a shared calibration cache, and the demo model quantized once per target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CALIB_COUNT = 128  # enough for the demo model's figures, small enough for two CI cores
# Lossless modes a folder of real images mixes: each must decode to the same RGB as the array.
PNG_MODES = ("L", "RGB", "RGBA", "I;16")


def write_png(img: np.ndarray, path: Path, mode: str) -> None:
    """A uint8 grayscale image saved as a PNG in ``mode``, without changing its pixel values."""
    from PIL import Image

    if mode == "L":
        out = Image.fromarray(img, "L")
    elif mode == "RGB":
        out = Image.fromarray(np.stack([img] * 3, axis=-1), "RGB")
    elif mode == "RGBA":
        out = Image.fromarray(np.dstack([img, img, img, np.full_like(img, 200)]), "RGBA")
    else:  # 16-bit grayscale: 0..255 -> 0..65535 (x257), which decoding maps back exactly
        out = Image.fromarray(img.astype(np.uint16) * 257)
    out.save(path)


@pytest.fixture(scope="session")
def png_writer():
    """``write_png(img, path, mode)`` for tests that build their own folders."""
    return write_png


@pytest.fixture(scope="session")
def calib_png(artifacts) -> Path:
    """digits:train (1,257 real digits) as a flat folder of PNG files, cycling grayscale, RGB, RGBA and 16-bit."""
    from resnet_deploy.data import digits_split

    root = artifacts / "calib-png"
    root.mkdir()
    images, _ = digits_split("train")
    for i, img in enumerate(images):
        write_png(img, root / f"{i:04d}.png", PNG_MODES[i % len(PNG_MODES)])
    return root


@pytest.fixture(scope="session")
def calib_cache(tmp_path_factory) -> Path:
    """One calibration cache for the test session (never the user's)."""
    return tmp_path_factory.mktemp("calibration-cache")


@pytest.fixture(scope="session")
def int8_demo(demo18_onnx, artifacts, calib_cache):
    """The demo ResNet-18 quantized for each target on 128 digits:train, gated on all of digits:eval.

    TensorRT first, then CPU in the same process: the CPU quantizer must still work after ModelOpt ran.
    """
    from resnet_deploy.calibration.gate import Int8Config
    from resnet_deploy.data import open_source
    from resnet_deploy.export.int8 import int8_from_onnx

    results = {}
    for target in ("tensorrt", "cpu"):
        results[target] = int8_from_onnx(
            demo18_onnx, artifacts / f"demo18.int8-{target}.onnx",
            calib_source=open_source("digits", split="train", count=CALIB_COUNT),
            config=Int8Config(target=target, cache_dir=calib_cache),
        )
    return results


@pytest.fixture(scope="session")
def outlier_onnx(demo18_onnx, artifacts) -> tuple[Path, str]:
    """The demo ResNet-18 with one activation channel scaled up 1000x: the same function in FP32, hostile to INT8.

    Output channel 0 of layer1.0.conv1 (weights and bias) is multiplied by 1000 and input channel 0
    of layer1.0.conv2 divided by 1000; Relu commutes with the positive scale, so FP32 answers do not
    change. One channel then spans 1000x the range of the others in the tensor between the two
    convs, and per-tensor INT8 activations rounds every other channel to zero: the classic outlier
    failure, confined to one layer's input. Returns the ONNX path and the name of that second conv.
    """
    import onnx
    from onnx import numpy_helper

    from resnet_deploy.manifest import manifest_path, read_manifest
    from resnet_deploy.publish import sha256_file

    model = onnx.load(str(demo18_onnx))
    inits = {i.name: i for i in model.graph.initializer}
    first = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] == "layer1.0.conv1.weight")
    second = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] == "layer1.0.conv2.weight")

    def scale(name: str, index: tuple, factor: float) -> None:
        arr = numpy_helper.to_array(inits[name]).copy()
        arr[index] *= factor
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))

    scale(first.input[1], (0,), 1000.0)
    scale(first.input[2], (0,), 1000.0)
    scale(second.input[1], (slice(None), 0), 1e-3)
    path = artifacts / "demo18-outlier.onnx"
    onnx.save_model(model, str(path))
    parent = read_manifest(demo18_onnx)  # same model, same manifest, but the hash of this file
    manifest_path(path).write_text(parent.derive(source={**parent.source, "sha256": sha256_file(path)}).to_json())
    return path, second.name
