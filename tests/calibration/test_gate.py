"""The accuracy gate's fallback: per-layer sensitivity, layers kept in high precision, and the missed gate."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from resnet_deploy.calibration.cpu import quantize_cpu
from resnet_deploy.calibration.gate import Int8Config, _schedule
from resnet_deploy.calibration.readers import spool_calibration
from resnet_deploy.calibration.sensitivity import layer_sensitivity, quantized_layers
from resnet_deploy.calibration.workspace import private_copy
from resnet_deploy.data import open_source
from resnet_deploy.errors import GateError
from resnet_deploy.export.artifact import parent_manifest
from resnet_deploy.export.int8 import int8_from_onnx
from resnet_deploy.parity import Gate


def _reads_dequantized(model: onnx.ModelProto, name: str) -> bool:
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == name)
    return any(i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input)


def test_outlier_model_is_the_same_function_in_fp32(outlier_onnx, demo18_onnx):
    x = next(iter(open_source("digits", split="eval").batches(parent_manifest(demo18_onnx).preprocess, batch_size=64)))
    x = x.as_input("float32", parent_manifest(demo18_onnx).preprocess)
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (demo18_onnx, outlier_onnx[0]))
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_fallback_keeps_the_layer_int8_breaks(outlier_onnx, calib_cache, tmp_path, target):
    """All-INT8 loses tens of points; the layer reading the outlier tensor ranks first, is kept in FP32, and the gate holds."""
    path, culprit = outlier_onnx
    log: list[str] = []
    result = int8_from_onnx(path, tmp_path / "m.onnx", calib_source=open_source("digits", split="train", count=128),
                            config=Int8Config(target=target, cache_dir=calib_cache), log=log.append)
    d, p = result.manifest.details, result.manifest.parity
    assert d["attempts"][0]["top1_drop"] > 10 and not d["attempts"][0]["passed"]
    assert d["sensitivity"][0]["node"] == culprit
    assert d["kept_high_precision"] == [culprit] and d["attempts"][-1]["passed"]
    assert p["top1_drop"] <= 0.5 and p["top1_agreement"] >= 0.99
    model = onnx.load(str(result.path))
    assert not _reads_dequantized(model, culprit)  # really FP32 inputs, not just left unfused
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert sum(_reads_dequantized(model, c) for c in convs) == len(convs) - 1  # every other Conv still INT8
    assert any("sensitivity" in line for line in log)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


def test_sensitivity_is_callable_directly(outlier_onnx, tmp_path):
    path, culprit = outlier_onnx
    manifest = parent_manifest(path)
    parent = private_copy(path, tmp_path)  # quantizers write beside their input
    cset = spool_calibration(open_source("digits", split="train", count=32), manifest.preprocess, tmp_path)
    quantized = tmp_path / "int8.onnx"
    quantize_cpu(parent, cset.reader(manifest, batch_size=32), quantized, method="max")
    before = onnx.load(str(parent)).SerializeToString()
    ranking = layer_sensitivity(parent, quantized, cset, manifest, samples=32)
    layers = quantized_layers(onnx.load(str(quantized)), {n.name for n in onnx.load(str(parent)).graph.node})
    assert sorted(s.node for s in ranking) == sorted(layers) and len(ranking) >= 21  # 20 Conv + the classifier at least
    errors = [s.error for s in ranking]
    assert errors == sorted(errors, reverse=True) and errors[-1] >= 0
    assert ranking[0].node == culprit and ranking[0].error > 100 * ranking[1].error
    assert onnx.load(str(parent)).SerializeToString() == before


def test_missed_gate_reports_every_attempt_and_publishes_nothing(outlier_onnx, calib_cache, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GateError) as err:
        int8_from_onnx(outlier_onnx[0], out / "m.onnx", calib_source=open_source("digits", split="train", count=32),
                       config=Int8Config(target="cpu", gate=Gate(max_drop=1.0, max_rel_diff=1e-9), max_kept=2,
                                         cache_dir=calib_cache),
                       eval_source=open_source("digits", split="eval", count=100))
    text = str(err.value)
    assert "kept up to 2 of" in text and "Nothing was published" in text
    for k in (0, 1, 2):
        assert f"{k} layers kept: top-1 drop" in text
    assert list(out.iterdir()) == []  # no artifact, no manifest, no work folder


def test_unrepresentative_calibration_misses_the_gate(demo18_onnx, tmp_path):
    """Scales calibrated on blank images clip real digits: the gate catches it."""
    np.savez(tmp_path / "blank.npz", images=np.zeros((16, 8, 8), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GateError, match=r"top-1 drop \d+\.\d+ points > 1\.00.*fallback is off"):
        int8_from_onnx(demo18_onnx, out / "m.onnx", calib_source=open_source(tmp_path / "blank.npz", split="train"),
                       config=Int8Config(target="cpu", method="max", max_kept=0, use_cache=False))
    assert list(out.iterdir()) == []


def test_schedule_doubles_then_ends_at_the_limit():
    assert _schedule(0) == []
    assert _schedule(1) == [1]
    assert _schedule(5) == [1, 2, 4, 5]
    assert _schedule(8) == [1, 2, 4, 8]
