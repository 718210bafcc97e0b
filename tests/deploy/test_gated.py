"""Deployment refuses artifacts whose gate did not hold on real data."""

from __future__ import annotations

import pytest

from resnet_deploy.deploy.gated import gated_manifest
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import BatchRange, InputSpec, Manifest, Preprocess, manifest_path

REAL = {"reference": "pytorch", "data": "digits:eval (540 samples)", "top1_agreement": 1.0}
SYNTHETIC = {"reference": "pytorch", "data": "synthetic random images, batch 1 and 7", "top1_agreement": 1.0}


def _artifact(tmp_path, name="model.onnx", **fields):
    path = tmp_path / name
    path.write_bytes(b"stand-in bytes: gated_manifest reads only the sidecar")
    manifest = Manifest(arch="resnet18", num_classes=10, precision="fp32", input=InputSpec(),
                        preprocess=Preprocess(), batch=BatchRange(), **fields)
    manifest_path(path).write_text(manifest.to_json())
    return path


def test_gated_on_real_data_is_accepted(tmp_path):
    assert gated_manifest(_artifact(tmp_path, parity=REAL)).parity == REAL


def test_engine_is_gated_by_its_onnx_parent(tmp_path):
    path = _artifact(tmp_path, "model.plan", parity=None, details={"onnx_parity": REAL})
    assert gated_manifest(path).arch == "resnet18"


@pytest.mark.parametrize("parity, words", [(None, "records no accuracy gate"), (SYNTHETIC, "only on synthetic")])
def test_ungated_is_refused_unless_allowed(tmp_path, parity, words):
    path = _artifact(tmp_path, parity=parity)
    with pytest.raises(UsageError, match=words):
        gated_manifest(path)
    assert gated_manifest(path, allow_ungated=True).parity == parity


def test_missing_manifest_is_refused_even_when_ungated_is_allowed(tmp_path):
    path = tmp_path / "bare.onnx"
    path.write_bytes(b"x")
    with pytest.raises(UsageError, match="no manifest beside it"):
        gated_manifest(path, allow_ungated=True)
    with pytest.raises(UsageError, match="no such artifact"):
        gated_manifest(tmp_path / "missing.onnx")
