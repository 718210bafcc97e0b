"""``resnet-export trt`` without TensorRT: exit 1, one line naming what to install, nothing written."""

from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from resnet_deploy.cli.export import cli


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_without_tensorrt_says_what_to_install(demo18_onnx, tmp_path):
    out = tmp_path / "m.plan"
    r = CliRunner().invoke(cli, ["trt", str(demo18_onnx), "-o", str(out)])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'resnet-deploy[tensorrt-cu12]'" in lines[0] and "JetPack" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_trt_bad_profile_is_a_usage_error(demo18_onnx, tmp_path):
    r = CliRunner().invoke(cli, ["trt", str(demo18_onnx), "-o", str(tmp_path / "m.plan"),
                                 "--min-batch", "8", "--max-batch", "4"])
    assert r.exit_code == 2 and "--min-batch" in r.output
    assert list(tmp_path.iterdir()) == []


def test_trt_size_options_on_a_classifier_are_a_usage_error(demo18_onnx, tmp_path):
    r = CliRunner().invoke(cli, ["trt", str(demo18_onnx), "-o", str(tmp_path / "m.plan"), "--max-size", "64"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "--max-size: this classify ONNX has a fixed" in lines[0] and "segmentation and backbone" in lines[0]
    assert list(tmp_path.iterdir()) == []
