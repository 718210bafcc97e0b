"""The exact-preprocessing variant keeps its parent's precision: FP16 and INT8 (Q/DQ) parents, real digits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from resnet_deploy.data import normalize, open_source
from resnet_deploy.deploy.nvinfer_graph import exact_variant, with_logits
from resnet_deploy.export.artifact import save_onnx
from resnet_deploy.manifest import read_manifest
from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession


@pytest.fixture(scope="module")
def children(demo18_onnx, tmp_path_factory):
    """The demo model in FP16 (AutoCast) and INT8 for TensorRT (ModelOpt Q/DQ), calibrated on real digits."""
    from resnet_deploy.calibration.gate import Int8Config
    from resnet_deploy.export.fp16 import fp16_from_onnx
    from resnet_deploy.export.int8 import int8_from_onnx

    folder = tmp_path_factory.mktemp("children")
    fp16 = fp16_from_onnx(demo18_onnx, folder / "demo18.fp16.onnx", calib_source=open_source("digits:train", count=32))
    int8 = int8_from_onnx(demo18_onnx, folder / "demo18.int8.onnx", calib_source=open_source("digits:train", count=64),
                          config=Int8Config(target="tensorrt", use_cache=False))
    return {"fp16": fp16.path, "int8": int8.path}


def _ops(model, *types):
    return [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node if n.op_type in types]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_variant_keeps_the_parent_graph_and_its_answers(children, tmp_path, precision):
    path = children[precision]
    manifest = read_manifest(path)
    parent = onnx.load(str(path))
    variant = exact_variant(parent, manifest.preprocess)
    renamed = {parent.graph.input[0].name: "nvinfer_normalised"}
    precise = ("QuantizeLinear", "DequantizeLinear", "Cast")
    expect = [(op, [renamed.get(i, i) for i in ins], outs) for op, ins, outs in _ops(parent, *precise)]
    assert _ops(variant, *precise) == expect and expect  # every Q/DQ and Cast as it was, now fed the normalised tensor
    dtypes = lambda m: sorted((t.name, t.data_type) for t in m.graph.initializer if not t.name.startswith("nvinfer_"))
    assert dtypes(variant) == dtypes(parent)  # FP16/INT8 weights untouched
    assert [n.op_type for n in variant.graph.node[:3]] == ["Div", "Sub", "Div"]
    assert variant.graph.node[-1].op_type == "Softmax" and variant.graph.output[0].name == "probs"

    save_onnx(with_logits(variant, parent.graph.output[0].name), tmp_path / "v.onnx")
    batch = next(open_source("digits", split="eval", count=64).batches(manifest.preprocess, batch_size=64))
    pixels = np.ascontiguousarray(batch.images.astype(np.float32).transpose(0, 3, 1, 2))
    with OnnxRuntimeSession(path) as a, OnnxRuntimeSession(tmp_path / "v.onnx") as b:
        ref, out = a.run(normalize(batch.images, manifest.preprocess)), b.run(pixels)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def test_int8_configuration_names_the_engine_nvinfer_builds(children, tmp_path):
    """network-mode=1 without int8-calib-file: nvinfer builds in FP16 mode and names the engine _fp16."""
    from resnet_deploy.deploy.deepstream import DeepStreamOptions, deepstream_from_onnx
    from resnet_deploy.deploy.nvinfer_preprocess import read_properties

    result = deepstream_from_onnx(children["int8"], tmp_path / "ds", eval_source=open_source("digits", count=64),
                                  options=DeepStreamOptions(photos=False))
    props = read_properties(tmp_path / "ds" / "config_infer_primary_demo18_int8.txt")
    assert props["network-mode"] == "1" and props["strongly-typed"] == "1" and "int8-calib-file" not in props
    assert props["model-engine-file"] == "demo18.int8.deepstream.onnx_b1_gpu0_fp16.engine"
    assert result.variant_gate.top1_agreement == 1.0 and result.variant_gate.max_rel_diff <= 1e-5
