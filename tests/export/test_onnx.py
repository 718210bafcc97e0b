"""torch -> ONNX: parity, dynamic batch, determinism, uint8 input, manifest, nothing published on failure."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from resnet_deploy.data import open_source
from resnet_deploy.errors import GateError, UsageError
from resnet_deploy.export import onnx as onnx_export
from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
from resnet_deploy.manifest import METADATA_KEY, Manifest, manifest_path, read_manifest
from resnet_deploy.models import ARCHS
from resnet_deploy.parity import Gate
from resnet_deploy.publish import sha256_file
from resnet_deploy.runtime import open_session
from resnet_deploy.weights import load_model


def test_demo_export_passes_the_fp32_gate_on_digits(demo18_onnx):
    m = read_manifest(demo18_onnx, required=True)
    assert m.precision == "fp32" and m.arch == "resnet18" and m.num_classes == 10
    assert m.input.shape == (-1, 3, 32, 32) and m.preprocess.resize == 32
    p = m.parity
    assert p["data"].startswith("digits:eval") and p["count"] == 540
    assert p["top1_agreement"] == 1.0 and p["max_rel_diff"] <= 1e-3 and p["top1"] >= 0.97
    assert m.source["sha256"] == sha256_file(demo18_onnx)
    assert m.versions["torch"] and m.versions["onnx"]
    embedded = {p.key: p.value for p in onnx.load(str(demo18_onnx)).metadata_props}[METADATA_KEY]
    assert Manifest.from_json(embedded).parity == m.parity
    assert manifest_path(demo18_onnx).name == "demo18.onnx.json"


def test_resnet50_parity_and_dynamic_batch(tmp_path):
    loaded = load_model("resnet50", None, num_classes=1000)
    out = tmp_path / "r50.onnx"
    onnx_from_torch(loaded, out, config=OnnxConfig(max_batch=16))
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value  # symbolic batch, not frozen
    from resnet_deploy.reference import TorchSession

    ref = TorchSession(loaded.model, image_size=224)
    rng = np.random.default_rng(1)
    with open_session(out, threads=2) as sess:
        for n in (1, 3, 16):
            x = rng.standard_normal((n, 3, 224, 224), dtype=np.float32)
            got, want = sess.run(x), ref.run(x)
            assert got.shape == (n, 1000)
            assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
        with pytest.raises(UsageError, match="outside this model's range 1..16"):
            sess.run(np.zeros((17, 3, 224, 224), np.float32))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_exports_and_runs_batch_1_and_7(arch, tmp_path):
    out = tmp_path / f"{arch}.onnx"
    onnx_from_torch(load_model(arch, None), out, config=OnnxConfig(image_size=64, max_batch=8))
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    with open_session(out) as sess:
        for n in (1, 7):
            logits = sess.run(np.zeros((n, 3, 64, 64), np.float32))
            assert logits.shape == (n, 1000) and np.isfinite(logits).all()


def test_same_inputs_give_identical_onnx_bytes(demo18, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx_from_torch(demo18, a)
    onnx_from_torch(demo18, b)
    assert a.read_bytes() == b.read_bytes()


def test_uint8_input_equals_the_float_path(demo18, demo18_onnx, tmp_path):
    out = tmp_path / "u8.onnx"
    onnx_from_torch(demo18, out, config=OnnxConfig(input_format="uint8"), eval_source=open_source("digits"))
    m = read_manifest(out)
    assert (m.input.dtype, m.input.layout, m.input.shape) == ("uint8", "NHWC", (-1, 32, 32, 3))
    batch = next(open_source("digits").batches(m.preprocess, batch_size=64))
    with open_session(out) as u8, open_session(demo18_onnx) as f32:
        a = u8.run(batch.as_input("uint8", m.preprocess))
        b = f32.run(batch.as_input("float32", m.preprocess))
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert (a.argmax(1) == b.argmax(1)).all()


def test_failed_gate_publishes_nothing(demo18, tmp_path):
    out = tmp_path / "never.onnx"
    strict = OnnxConfig(gate=Gate(min_agreement=1.0, max_rel_diff=0.0))  # no float export is bit-exact
    with pytest.raises(GateError, match="accuracy gate"):
        onnx_from_torch(demo18, out, config=strict)
    assert list(tmp_path.iterdir()) == []


def test_simplifier_that_changes_answers_is_not_published(demo18, tmp_path, monkeypatch):
    real = onnx_export.simplify

    def broken(model):
        model = real(model)
        for init in model.graph.initializer:
            if init.name.endswith("fc.bias"):
                init.raw_data = (np.frombuffer(init.raw_data, np.float32) + 5).astype(np.float32).tobytes()
        return model

    monkeypatch.setattr(onnx_export, "simplify", broken)
    with pytest.raises(GateError, match="onnxsim changed the answers"):
        onnx_from_torch(demo18, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_and_left_unchanged(demo18_onnx, demo18):
    before = demo18_onnx.read_bytes()
    with pytest.raises(UsageError, match="`overwrite=True`"):
        onnx_from_torch(demo18, demo18_onnx)
    assert demo18_onnx.read_bytes() == before
    assert json.loads(manifest_path(demo18_onnx).read_text())["format"] == "resnet-deploy/1"
