"""tools/gpu_acceptance.py on a machine without a GPU: it must fail loudly, never skip or pass."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu_acceptance.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _has_gpu() -> bool:
    from resnet_deploy.errors import MissingDependencyError
    from resnet_deploy.runtime import cuda

    try:
        return cuda.device_count() > 0
    except MissingDependencyError:
        return False


@pytest.mark.skipif(_has_gpu(), reason="this host has a GPU: run the script itself")
def test_without_a_gpu_the_script_fails_loudly(tmp_path):
    out = tmp_path / "acceptance.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu acceptance FAILED: "), proc.stderr
    assert "cuda-python" in lines[0] or "no usable CUDA device" in lines[0]
    result = json.loads(out.read_text())
    assert result["passed"] is False and result["failures"] and result["steps"] == {}


class _NoDriver:
    """cuda-bindings 12.9+ without a driver: cudaGetDeviceCount returns cudaErrorInsufficientDriver (35)."""

    def cudaGetDeviceCount(self):  # noqa: N802 - cuda-python's name
        return 35, 0


def test_no_device_is_a_failure_not_a_skip(monkeypatch):
    from resnet_deploy.runtime import cuda

    module = _module()
    monkeypatch.setattr(cuda, "_cudart", _NoDriver())
    with pytest.raises(module.AcceptanceFailed, match="asked for a GPU, but cuda-python sees no usable CUDA device"):
        module.probe_gpu()


def test_a_skipped_gpu_test_fails_the_step(tmp_path):
    module = _module()
    xml = tmp_path / "cuda.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="t" name="a" time="0.1"/>'
                   '<testcase classname="t" name="b" time="0"><skipped message="needs a CUDA device"/></testcase>'
                   '</testsuite></testsuites>')
    summary = module._junit(xml)
    assert (summary["passed"], summary["skipped"], summary["failed"]) == (1, 1, 0)
    assert summary["tests"][1]["outcome"] == "skipped: needs a CUDA device"


def test_baseline_options_exist_in_resnet_bench():
    from click.testing import CliRunner

    from resnet_deploy.cli.bench import cli

    result = CliRunner().invoke(cli, ["torch", "--help"], prog_name="resnet-bench")
    assert result.exit_code == 0, result.output
    help_text = result.output
    for option in _module().BASELINE:
        if option.startswith("--"):
            assert option in help_text, option
