"""``resnet-export int8`` through click: figures printed, exit codes, nothing published on a missed gate."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from resnet_deploy.cli.export import cli


def run(*args: str):
    return CliRunner().invoke(cli, ["int8", *map(str, args)])


def test_cli_int8_from_a_png_folder(demo18_onnx, calib_png, tmp_path):
    out = tmp_path / "d.int8.onnx"
    result = run(demo18_onnx, "--calib-data", calib_png, "--calib-count", 64, "--target", "cpu", "--no-cache", "-o", out)
    assert result.exit_code == 0, result.output
    assert "int8, input float32 NCHW" in result.output
    assert "calibration: " in result.output and "64 used, 0 skipped, entropy" in result.output
    assert "int8 (cpu): kept in fp32: none" in result.output
    manifest = json.loads((tmp_path / "d.int8.onnx.json").read_text())
    assert manifest["precision"] == "int8" and manifest["parity"]["top1_drop"] <= 0.5


def test_cli_fallback_names_the_kept_layer(outlier_onnx, tmp_path):
    path, culprit = outlier_onnx
    result = run(path, "--calib-data", "digits", "--calib-count", 64, "--target", "cpu", "--no-cache",
                 "-o", tmp_path / "o.onnx")
    assert result.exit_code == 0, result.output
    assert f"int8 (cpu): kept in fp32: {culprit}" in result.output
    assert "measuring the INT8 sensitivity" in result.output  # progress goes to stderr, mixed in by CliRunner


def test_cli_missed_gate_exits_1_and_publishes_nothing(outlier_onnx, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run(outlier_onnx[0], "--calib-data", "digits", "--calib-count", 32, "--target", "cpu", "--max-kept", 0,
                 "--no-cache", "-o", out / "o.onnx")
    assert result.exit_code == 1
    assert "Error: INT8 (cpu) missed the accuracy gate (top-1 drop" in result.output
    assert "Nothing was published" in result.output and "Traceback" not in result.output
    assert list(out.iterdir()) == []


def test_cli_usage_errors_exit_2(demo18_onnx, tmp_path):
    cases = [
        ((demo18_onnx, "-o", tmp_path / "a.onnx"), "--calib-data is required"),
        ((demo18_onnx, "--calib-data", "digits", "--method", "percentile", "-o", tmp_path / "a.onnx"),
         "percentile is not supported for --target tensorrt"),
        ((demo18_onnx, "--calib-data", tmp_path / "nowhere", "-o", tmp_path / "a.onnx"), "no such file or folder"),
        ((tmp_path / "missing.onnx", "--calib-data", "digits", "-o", tmp_path / "a.onnx"), "does not exist"),
        ((demo18_onnx, "--calib-data", "digits", "--target", "cpu", "--high-precision", "fp16", "-o", tmp_path / "a.onnx"),
         "--high-precision fp16 is not offered by --target cpu"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_too_few_calibration_images_exit_2(demo18_onnx, tmp_path):
    np.savez(tmp_path / "few.npz", images=np.zeros((5, 8, 8), np.uint8))
    result = run(demo18_onnx, "--calib-data", tmp_path / "few.npz", "--no-cache", "-o", tmp_path / "a.onnx")
    assert result.exit_code == 2
    assert "5 usable calibration images" in result.output and "at least 16" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.npz"]
