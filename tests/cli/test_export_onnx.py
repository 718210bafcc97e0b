"""``resnet-export onnx`` through click's CliRunner: output, exit codes, one-line errors."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from resnet_deploy.cli.export import cli
from resnet_deploy.manifest import read_manifest
from resnet_deploy.models import build_model


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_onnx_command_exports_the_demo_and_reports_parity(tmp_path, demo18):
    out = tmp_path / "d.onnx"
    r = _run("onnx", "--arch", "resnet18", "--weights", "demo", "--eval-data", "digits", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output and "agreement 100.00%" in r.output and "time:" in r.output
    assert read_manifest(out).parity["count"] == 540


def test_unknown_arch_is_a_usage_error():
    r = _run("onnx", "--arch", "resnet51", "-o", "x.onnx")
    assert r.exit_code == 2 and "resnet18" in r.output


def test_head_mismatch_is_one_line_exit_2(tmp_path):
    ckpt = tmp_path / "ten.pth"
    torch.save(build_model("resnet18", num_classes=10).state_dict(), ckpt)
    r = _run("onnx", "--arch", "resnet18", "--weights", str(ckpt), "-o", str(tmp_path / "m.onnx"))
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "use --num-classes 10" in lines[0] and "Traceback" not in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_missing_output_folder_fails_before_work(tmp_path):
    r = _run("onnx", "--arch", "resnet18", "-o", str(tmp_path / "no" / "m.onnx"))
    assert r.exit_code == 2 and "output folder does not exist" in r.output


def test_debug_shows_the_traceback(tmp_path):
    ckpt = tmp_path / "empty.pth"
    ckpt.write_bytes(b"")
    r = _run("--debug", "onnx", "--arch", "resnet18", "--weights", str(ckpt), "-o", str(tmp_path / "m.onnx"))
    assert r.exit_code == 2 and "Traceback" in r.output  # --debug adds the traceback, keeps the exit code
    assert r.output.rstrip().splitlines()[-1].startswith("Error: ") and "empty" in r.output
