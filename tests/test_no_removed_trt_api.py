"""No code under resnet_deploy/ uses TensorRT API that TensorRT 11 removed (or that 10.3 lacks).

TensorRT 11 removed weak typing: the precision builder flags, INT8 calibrators and the
``platform_has_fast_*`` queries (docs/user-guide.md, "TensorRT engines"); precision lives in the ONNX instead. The
scan reads the syntax tree, so comments and docstrings that name these APIs are fine: only
attribute access, names, imports and ``getattr(..., "NAME")`` count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resnet_deploy"

#: BuilderFlag members removed in TensorRT 11 (STRICT_TYPES already in 10.0)
REMOVED_FLAGS = {"FP16", "BF16", "INT8", "FP8", "FP4", "INT4", "OBEY_PRECISION_CONSTRAINTS",
                 "PREFER_PRECISION_CONSTRAINTS", "STRICT_TYPES"}
#: attributes and classes removed in TensorRT 11, and TensorRT 8 calls gone since 10.0 or absent in 10.3
REMOVED_NAMES = {
    "int8_calibrator", "platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32",
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
    "IInt8LegacyCalibrator", "CalibrationAlgoType", "get_calibration_profile", "set_calibration_profile",
    "build_engine", "build_engine_with_config", "execute_async_v2", "max_workspace_size", "num_bindings",
    "get_binding_shape", "set_binding_shape", "binding_is_input", "get_binding_dtype",
}


def _flag_holder(node: ast.AST) -> bool:
    """``trt.BuilderFlag`` or a bare ``BuilderFlag``."""
    return (isinstance(node, ast.Attribute) and node.attr == "BuilderFlag") or (
        isinstance(node, ast.Name) and node.id == "BuilderFlag")


def removed_api_uses(source: str, filename: str = "<string>") -> list[str]:
    """``file:line: name`` for each use of removed TensorRT API in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        name = None
        if isinstance(node, ast.Attribute):
            if node.attr in REMOVED_NAMES or (node.attr in REMOVED_FLAGS and _flag_holder(node.value)):
                name = node.attr
        elif isinstance(node, ast.Name) and node.id in REMOVED_NAMES:
            name = node.id
        elif isinstance(node, ast.alias) and node.name.split(".")[-1] in REMOVED_NAMES:
            name = node.name
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr",
                                                                                                "setattr"):
            args = node.args
            if len(args) >= 2 and isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
                text = args[1].value
                if text in REMOVED_NAMES or (text in REMOVED_FLAGS and _flag_holder(args[0])):
                    name = text
        if name:
            found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {name}")
    return found


@pytest.mark.parametrize("code", [
    "config.set_flag(trt.BuilderFlag.INT8)",
    "config.set_flag(trt.BuilderFlag.FP16)",
    "from tensorrt import BuilderFlag\nconfig.set_flag(BuilderFlag.BF16)",
    "config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)",
    "config.int8_calibrator = calib",
    "class Calib(trt.IInt8EntropyCalibrator2):\n    pass",
    "from tensorrt import IInt8MinMaxCalibrator",
    "if builder.platform_has_fast_fp16:\n    pass",
    "engine = builder.build_engine(network, config)",
    "context.execute_async_v2(bindings, stream)",
    "config.set_flag(getattr(trt.BuilderFlag, 'INT8'))",
    "x = getattr(config, 'int8_calibrator', None)",
])
def test_removed_api_is_caught(code):
    assert removed_api_uses(code)


@pytest.mark.parametrize("code", [
    '"""Do not use trt.BuilderFlag.INT8 or config.int8_calibrator: TensorRT 11 removed them."""',
    "# config.set_flag(trt.BuilderFlag.FP16) is gone in TensorRT 11",
    "config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)",
    "precision = Precision.INT8  # our own enum, not TensorRT's",
    "quantize(onnx_path, quantize_mode='int8', high_precision_dtype='fp16')",
    "plan = builder.build_serialized_network(network, config)",
])
def test_allowed_code_passes(code):
    assert removed_api_uses(code) == []


def test_package_uses_no_removed_tensorrt_api():
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no sources under {PACKAGE}"
    found = [hit for path in files
             for hit in removed_api_uses(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert not found, "TensorRT API removed in 11.x (or absent in 10.3) used:\n" + "\n".join(found)
