"""``resnet-export pipeline --task segment`` on the built-in default: the demo FCN-ResNet18 on digits-seg.

Every artifact gated by the segmenter's metrics, the report's mIoU columns, the overlay image.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from resnet_deploy.cli.export import cli
from resnet_deploy.manifest import read_manifest
from resnet_deploy.pipeline import OVERLAY_IMAGES


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline-seg") / "out"
    r = CliRunner().invoke(cli, ["pipeline", "--task", "segment", "-o", str(out), "--duration", "0.2",
                                 "--calib-count", "64", "--batch", "1,4"])
    return out, r


def test_segment_pipeline_gates_every_artifact_on_mIoU_and_reports_it(seg_run):
    out, r = seg_run
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    ok = [s["name"] for s in report["stages"] if s["status"] == "ok"]
    assert ok[:4] == ["FP32 ONNX", "FP16 ONNX", "INT8 ONNX for TensorRT", "INT8 ONNX for CPUs"]
    rows = {row["artifact"]: row for row in report["summary"]}
    torch_row = rows.pop("torch:fcn_resnet18:demo")
    assert set(rows) == {"fcn_resnet18.onnx", "fcn_resnet18.fp16.onnx", "fcn_resnet18.int8.onnx",
                         "fcn_resnet18.int8-cpu.onnx"}
    # A trained segmenter: far above an all-background answer (whose mIoU is background's IoU / classes seen).
    assert torch_row["miou"] > 0.5
    assert rows["fcn_resnet18.onnx"]["pixel_agreement"] >= 0.9999
    assert rows["fcn_resnet18.fp16.onnx"]["pixel_agreement"] >= 0.995
    for name in ("fcn_resnet18.int8.onnx", "fcn_resnet18.int8-cpu.onnx"):
        assert rows[name]["miou_drop"] <= 1.0, rows[name]
        m = read_manifest(out / name)
        assert m.task == "segment" and m.size is not None and m.parity["miou_drop"] <= 1.0
    assert all(rep["task"] == "segment" for rep in report["benchmarks"])
    assert "mIoU %" in r.output and "overlay.png" in r.output


def test_segment_pipeline_draws_the_overlay_of_held_out_images(seg_run):
    out, r = seg_run
    assert r.exit_code == 0, r.output
    with Image.open(out / "overlay.png") as img:
        assert img.format == "PNG"
        width, height = img.size
    # one row per image; columns: image, ground truth, PyTorch, two INT8 artifacts
    assert width > height * 5 / OVERLAY_IMAGES * 0.8
    assert "![PyTorch and INT8 class maps on held-out images](overlay.png)" in (out / "report.md").read_text()


def test_segment_pipeline_refuses_a_classifier_option(tmp_path):
    r = CliRunner().invoke(cli, ["pipeline", "--task", "segment", "--image-size", "64", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "a segmenter takes the whole image" in r.output
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(cli, ["pipeline", "--arch", "resnet50", "--task", "backbone", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and not (tmp_path / "o").exists()
