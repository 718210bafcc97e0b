"""FP16 with ModelOpt AutoCast on the demo ResNet-18: FP32 I/O kept, gated against PyTorch, published atomically."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from resnet_deploy.cli.export import cli
from resnet_deploy.data import open_source
from resnet_deploy.errors import GateError, UsageError
from resnet_deploy.export.fp16 import Fp16Config, fp16_from_onnx
from resnet_deploy.parity import Gate
from resnet_deploy.publish import sha256_file
from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession


@pytest.fixture(scope="module")
def fp16_demo(demo18_onnx, artifacts):
    return fp16_from_onnx(demo18_onnx, artifacts / "demo18.fp16.onnx",
                          calib_source=open_source("digits", split="train", count=32))


def test_fp16_meets_its_gate_against_pytorch(fp16_demo, demo18_onnx):
    m = fp16_demo.manifest
    p = m.parity
    assert p["reference"] == "pytorch" and p["count"] == 540
    assert p["top1_agreement"] >= 0.995 and p["top1_drop"] <= 0.2 and p["nonfinite"] == 0
    assert m.precision == "fp16"
    assert m.source["parent_sha256"] == sha256_file(demo18_onnx)
    assert m.source["calibration"]["count"] == 32 and m.source["calibration"]["source"].startswith("digits:train")
    assert m.details["keep_io_types"] is True and m.details["fp16_initializers"] > 0


def test_fp16_keeps_fp32_inputs_and_outputs(fp16_demo):
    model = onnx.load(str(fp16_demo.path))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert conv_weights and all(types.get(w) == onnx.TensorProto.FLOAT16 for w in conv_weights if w in types)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with OnnxRuntimeSession(fp16_demo.path, provider="cpu") as sess:
        assert sess.input_dtype == "float32"
        out = sess.run(x)
    assert out.dtype == np.float32 and out.shape == (3, 10)


def test_fp16_falls_back_to_the_parent_when_weights_cannot_be_rebuilt(demo18_onnx, tmp_path):
    parent = tmp_path / "moved.onnx"
    shutil.copy(demo18_onnx, parent)
    manifest = json.loads((demo18_onnx.parent / (demo18_onnx.name + ".json")).read_text())
    manifest["source"]["weights"] = str(tmp_path / "gone.pth")
    (tmp_path / "moved.onnx.json").write_text(json.dumps(manifest))
    result = fp16_from_onnx(parent, tmp_path / "f.onnx", eval_source=open_source("digits", split="eval", count=100))
    ref = result.manifest.parity["reference"]
    assert ref.startswith("onnx-fp32 moved.onnx (PyTorch weights not rebuilt:") and "gone.pth" in ref
    assert result.manifest.source["calibration"] is None
    assert result.manifest.details["calibration"].startswith("random inputs")


def test_missed_fp16_gate_publishes_nothing(demo18_onnx, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GateError, match="FP16 ONNX failed its accuracy gate"):
        fp16_from_onnx(demo18_onnx, out / "f.onnx", config=Fp16Config(gate=Gate(max_rel_diff=1e-9)),
                       eval_source=open_source("digits", split="eval", count=64))
    assert list(out.iterdir()) == []


def test_fp16_refuses_a_converted_parent_and_needs_eval_data(fp16_demo, demo18_onnx, tmp_path):
    with pytest.raises(UsageError, match="is fp16; FP16 starts from the FP32 ONNX"):
        fp16_from_onnx(fp16_demo.path, tmp_path / "f.onnx")
    parent = tmp_path / "p.onnx"
    shutil.copy(demo18_onnx, parent)
    manifest = json.loads((demo18_onnx.parent / (demo18_onnx.name + ".json")).read_text())
    manifest["source"]["weights"] = "random"
    (tmp_path / "p.onnx.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="FP16 needs evaluation data"):
        fp16_from_onnx(parent, tmp_path / "f.onnx")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.onnx", "p.onnx.json"]


def test_cli_fp16(demo18_onnx, tmp_path):
    out = tmp_path / "d.fp16.onnx"
    result = CliRunner().invoke(cli, ["fp16", str(demo18_onnx), "--calib-count", "16", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "fp16" in result.output and "agreement 100.00%" in result.output
    assert "calibration: digits:train (16 samples)" in result.output
    assert json.loads((tmp_path / "d.fp16.onnx.json").read_text())["precision"] == "fp16"
    again = CliRunner().invoke(cli, ["fp16", str(demo18_onnx), "-o", str(out)])
    assert again.exit_code == 2 and "exists; pass" in again.output


def test_autocast_sample_count_shrinks_with_image_size():
    """AutoCast holds every activation of every sample: at 224x224 it gets 8 (ResNet-50: about 2.4 GiB peak)."""
    from resnet_deploy.export.fp16 import autocast_samples

    assert autocast_samples(224, 32) == 8
    assert autocast_samples(32, 32) == 32
    assert autocast_samples(32, 32, Fp16Config(max_calibration=4)) == 4
