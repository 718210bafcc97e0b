"""Model specs and references: parsing, opening, and the reference an artifact is compared with."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from resnet_deploy.benchmarks.specs import (ModelSpec, OpenOptions, check_torch_device, open_model, open_reference,
                                            parse_spec)
from resnet_deploy.errors import UsageError


def test_parse_torch_specs():
    assert parse_spec("torch:resnet18:demo") == ModelSpec("torch", "torch:resnet18:demo", arch="resnet18", weights="demo")
    spec = parse_spec("torch:resnet50:torchvision:IMAGENET1K_V2")  # weights keep their own colon
    assert spec.arch == "resnet50" and spec.weights == "torchvision:IMAGENET1K_V2"
    assert parse_spec("torch:resnet34").weights == "random" and parse_spec("torch:resnet34:random").weights == "random"
    with pytest.raises(UsageError, match="resnet18, resnet34"):
        parse_spec("torch:resnet19:demo")


def test_parse_files(demo18_onnx, tmp_path):
    assert parse_spec(str(demo18_onnx)).kind == "onnx"
    renamed = tmp_path / "model.bin.x"
    shutil.copy(demo18_onnx, renamed)
    assert parse_spec(f"onnx:{renamed}") == ModelSpec("onnx", f"onnx:{renamed}", path=renamed)
    with pytest.raises(UsageError, match="not a model spec"):
        parse_spec(str(renamed))
    with pytest.raises(UsageError, match="no such file"):
        parse_spec(str(tmp_path / "missing.onnx"))
    with pytest.raises(UsageError, match="no such file"):
        parse_spec(f"trt:{tmp_path / 'missing.plan'}")


def test_open_onnx_and_torch_agree(demo18_onnx):
    ort = open_model(parse_spec(str(demo18_onnx)), options=OpenOptions(threads=1))
    torch = open_model(parse_spec("torch:resnet18:demo"), options=OpenOptions(threads=1))
    assert ort.precision == "fp32" and ort.device == "cpu" and ort.preprocess.crop == 32
    assert torch.preprocess == ort.preprocess  # the demo weights' preset
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(ort.session.run(x), torch.session.run(x), atol=1e-4)


def test_default_reference_is_the_model_rebuilt_from_the_manifest(demo18_onnx):
    candidate = open_model(parse_spec(str(demo18_onnx)))
    ref = open_reference(None, candidate=candidate, options=OpenOptions(threads=1))
    assert ref.label == "torch:resnet18:demo (from the manifest)" and ref.session.backend == "torch"
    assert open_reference("none", candidate=candidate, options=OpenOptions()) is None
    # A PyTorch candidate is its own reference.
    torch = open_model(parse_spec("torch:resnet18:demo"))
    assert open_reference(None, candidate=torch, options=OpenOptions()) is None


def test_reference_from_a_checkpoint_guesses_arch_and_head(demo18, demo18_onnx, tmp_path):
    import torch

    ckpt = tmp_path / "demo18.pth"
    torch.save(demo18.model.state_dict(), ckpt)
    candidate = open_model(parse_spec(str(demo18_onnx)))
    ref = open_reference(str(ckpt), candidate=candidate, options=OpenOptions(threads=1))
    assert ref.label == f"torch:resnet18:{ckpt}"
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(ref.session.run(x), candidate.session.run(x), atol=1e-4)


def test_reference_pair_and_checkpoint_alone(demo18_onnx):
    candidate = open_model(parse_spec(str(demo18_onnx)))
    ref = open_reference(None, candidate=candidate, options=OpenOptions(), arch="resnet18", weights="demo")
    assert ref.label == "torch:resnet18:demo"
    with pytest.raises(UsageError, match="torch:ARCH"):
        open_model(ModelSpec("checkpoint", "w.pth"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_absent_is_one_clear_line():
    with pytest.raises(UsageError, match="no CUDA device is visible to torch"):
        check_torch_device("cuda")
    with pytest.raises(UsageError, match="cpu or cuda"):
        check_torch_device("tpu")
    check_torch_device("cpu")
