"""``resnet-bench`` through click's CliRunner: tables, JSON in the documented schema, gates, exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from resnet_deploy.benchmarks.report import schema_problems
from resnet_deploy.cli.bench import cli

QUICK = ["--warmup", "0", "--iterations", "3", "--threads", "1"]


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _errors(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.strip()]


def test_onnx_writes_a_schema_valid_report(demo18_onnx, tmp_path):
    out = tmp_path / "r.json"
    r = _run("onnx", str(demo18_onnx), "--batch", "1,4", *QUICK, "--data", "digits", "--count", "64",
             "--max-drop", "0", "--min-agreement", "100", "--json", str(out))
    assert r.exit_code == 0, r.output
    assert "batch  img/s" in r.output and "p99 ms" in r.output
    assert "parity vs torch:resnet18:demo (from the manifest)" in r.output and "agreement 100.00%" in r.output
    report = json.loads(out.read_text())
    assert schema_problems(report) == []
    assert [run["batch"] for run in report["runs"]] == [1, 4]
    assert report["accuracy"]["count"] == 64 and report["environment"]["threads"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".resnet-deploy-tmp")]


def test_missed_gate_exits_1_and_writes_nothing(demo18_onnx, tmp_path):
    out = tmp_path / "r.json"
    # The reference as an --arch/--weights pair: an untrained ResNet-18, another model entirely.
    r = _run("onnx", str(demo18_onnx), *QUICK, "--data", "digits", "--count", "64", "--arch", "resnet18",
             "--weights", _untrained_ckpt(tmp_path), "--min-agreement", "99", "--json", str(out))
    assert r.exit_code == 1, r.output
    (line,) = _errors(r)
    assert "failed its accuracy gate" in line and "top-1 agreement" in line
    assert not out.exists() and "Traceback" not in r.output


def _untrained_ckpt(tmp_path) -> str:
    import torch

    from resnet_deploy.models import build_model

    path = tmp_path / "untrained10.pth"
    torch.manual_seed(1)
    torch.save(build_model("resnet18", num_classes=10).state_dict(), path)
    return str(path)


def test_torch_and_compare_with_plot(demo18_onnx, tmp_path):
    r = _run("torch", "--arch", "resnet18", "--weights", "demo", "--batch", "2", *QUICK)
    assert r.exit_code == 0, r.output
    assert "torch:resnet18:demo: torch cpu fp32" in r.output
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    r = _run("compare", "torch:resnet18:demo", str(demo18_onnx), "--batch", "1,2", *QUICK, "--data", "digits",
             "--count", "32", "--json", str(out), "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert "x torch:resnet18:demo" in r.output and "agree" in r.output
    data = json.loads(out.read_text())
    assert sorted(data["ranking"]) == sorted(["torch:resnet18:demo", str(demo18_onnx)])
    assert all(schema_problems(rep) == [] for rep in data["reports"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_absent_is_one_line():
    r = _run("torch", "--arch", "resnet18", "--device", "cuda")
    assert r.exit_code == 2
    (line,) = _errors(r)
    assert "--device cuda: no CUDA device is visible to torch" in line


@pytest.mark.parametrize("args, message", [
    (["onnx", "MISSING.onnx", "--batch", "1,x"], "not a comma-separated list"),
    (["onnx", "MISSING.onnx", "--count", "5"], "--count needs --data"),
    (["onnx", "MISSING.onnx"], "MISSING.onnx: no such file"),
    (["compare", "torch:resnet99"], "unknown arch"),
    (["compare", "torch:resnet18", "torch:resnet18"], "named twice"),
    (["trt", "MISSING.plan"], "MISSING.plan: no such file"),
])
def test_usage_errors_exit_2(args, message):
    r = _run(*args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_garbage_engine_is_refused_before_tensorrt(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_text("this is not an engine\n" * 10)
    r = _run("trt", str(plan))
    assert r.exit_code == 2
    (line,) = _errors(r)
    assert "not a TensorRT engine" in line


def test_json_destination_checked_before_work(demo18_onnx, tmp_path):
    r = _run("onnx", str(demo18_onnx), *QUICK, "--json", str(tmp_path / "missing" / "r.json"))
    assert r.exit_code == 2 and "output folder does not exist" in r.stderr


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="checks the no-TensorRT error")
def test_trt_without_tensorrt_is_one_line_exit_1(demo18_onnx, tmp_path):
    from resnet_deploy.manifest import manifest_path, read_manifest
    from resnet_deploy.publish import sha256_bytes

    plan = tmp_path / "model.plan"
    data = bytes(range(256)) * 8  # binary, not any format the loader recognises as foreign
    plan.write_bytes(data)
    m = read_manifest(demo18_onnx)
    m = m.derive(build={"tensorrt": "10.13.3", "compute_capability": "8.7", "gpu": "Orin"},
                 source={**m.source, "sha256": sha256_bytes(data)})
    manifest_path(plan).write_text(m.to_json())
    r = _run("trt", str(plan), *QUICK)
    assert r.exit_code == 1, r.output
    (line,) = _errors(r)
    assert "tensorrt is not installed" in line and "pip install 'resnet-deploy[tensorrt-cu12]'" in line
