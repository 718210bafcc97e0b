"""The install proof for devices: pip's resolver on the built wheel, for a Jetson (aarch64, CPython 3.10)
and an x86-64 host (CPython 3.11), through ``tools/check_install_resolution.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "check_install_resolution.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("check_install_resolution", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checks_catch_the_toolchain_and_two_onnxruntimes(tool):
    assert tool.problems("", {"numpy", "torch"}) == ["torch in the base install"]
    assert tool.problems("jetson", {"nvidia-modelopt", "onnxruntime-gpu"}) == [
        "nvidia-modelopt in the jetson extra", "onnxruntime-gpu in the jetson extra"]
    assert tool.problems("cpu", {"onnxruntime", "onnxruntime-gpu"}) == ["both onnxruntime and onnxruntime-gpu"]
    assert tool.problems("jetson,cpu", {"onnxruntime", "cuda-python"}) == []


def test_base_and_jetson_resolve_without_the_toolchain_on_both_platforms(tool, tmp_path):
    wheel = tool.build_wheel(tmp_path)
    try:
        result = tool.check(wheel)
    except tool.IndexUnreachable as exc:
        pytest.skip(f"the package index is unreachable, nothing was resolved: {exc}")
    print(tool.describe(result))  # the sizes, with -s
    seen = {(r["platform"], r["python"], r["extras"]): r for r in result["resolutions"]}
    for arch, python in (("aarch64", "3.10"), ("x86_64", "3.11")):
        for extras in ("", "jetson", "cpu", "jetson,cpu"):
            r = seen[(arch, python, extras)]
            names = {p["name"] for p in r["packages"]}
            assert r["problems"] == [], (arch, extras, r["problems"])
            assert {"numpy", "pillow", "click"} <= names  # resolved for real, not vacuously empty
            assert not names & {"torch", "onnx", "onnxsim", "nvidia-modelopt", "onnxruntime-gpu"}
            assert ("cuda-python" in names) == ("jetson" in extras)
            assert ("onnxruntime" in names) == ("cpu" in extras)
        cuda = next(p for p in seen[(arch, python, "jetson")]["packages"] if p["name"] == "cuda-python")
        assert cuda["version"].startswith("12."), cuda  # JetPack 6's CUDA 12 driver: never cuda-python 13
