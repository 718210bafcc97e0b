"""The recorded reference: written by the FP32 export, hashed in the manifest, used where torch is absent."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from resnet_deploy.benchmarks.benchmark import measure
from resnet_deploy.benchmarks.specs import OpenOptions, RecordedRef, choose_reference, open_model, parse_spec
from resnet_deploy.data import open_source
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import read_manifest
from resnet_deploy.publish import atomic_paths, sha256_file
from resnet_deploy.recorded import LOGIT_BUDGET, ReferenceRecorder, read_recorded, reference_path


def test_the_fp32_export_records_pytorchs_answers_on_its_evaluation_data(demo18_onnx, demo18):
    manifest = read_manifest(demo18_onnx)
    entry = manifest.reference
    assert entry["sha256"] == sha256_file(reference_path(demo18_onnx)) and entry["data_digest"]
    recorded, _ = read_recorded(demo18_onnx, manifest)
    source = open_source("digits", split="eval")
    assert recorded.data_digest == source.digest() and recorded.count == len(recorded.logits) == 540
    # the recorded logits are PyTorch's own, sample for sample
    from resnet_deploy.reference import TorchSession

    torch_session = TorchSession(demo18.model, image_size=32)
    batch = next(iter(source.batches(manifest.preprocess, batch_size=16)))
    np.testing.assert_allclose(recorded.logits[:16], torch_session.run(batch.as_input("float32", manifest.preprocess)),
                               rtol=1e-5, atol=1e-5)
    assert (recorded.labels[:16] == batch.labels).all() and (recorded.topk[:16, 0] == recorded.logits[:16].argmax(1)).all()


def test_without_torch_auto_takes_the_recorded_reference_with_the_figures_torch_gives(demo18_onnx, monkeypatch):
    source = open_source("digits", split="eval")
    candidate = open_model(parse_spec(str(demo18_onnx)), options=OpenOptions(threads=1))
    with_torch = choose_reference(None, candidate=candidate, options=OpenOptions(threads=1), source=source)
    assert with_torch.kind == "torch"
    monkeypatch.setattr("resnet_deploy.extras.importable", lambda module: module != "torch")
    without = choose_reference(None, candidate=candidate, options=OpenOptions(threads=1), source=source)
    assert without.kind == "recorded" and isinstance(without.reference, RecordedRef)
    _, by_torch = measure(candidate, source=source, reference=with_torch.reference)
    _, by_record = measure(candidate, source=source, reference=without.reference)
    assert by_record["reference_kind"] == "recorded"
    for key in ("top1_agreement", "top1_drop", "top1_ref", "top5_ref", "count", "nonfinite"):
        assert by_record[key] == by_torch[key], key
    assert by_record["max_abs_diff"] == pytest.approx(by_torch["max_abs_diff"], rel=1e-5)
    # other data: auto measures no parity and says why; `recorded` insists and refuses
    other = open_source("digits", split="eval", count=100)
    none = choose_reference(None, candidate=candidate, options=OpenOptions(), source=other)
    assert none.reference is None and "recorded reference is for other data" in none.why
    recorded = choose_reference("recorded", candidate=candidate, options=OpenOptions(), source=other).reference
    with pytest.raises(UsageError, match="not the data the recorded reference was recorded on"):
        measure(candidate, source=other, reference=recorded)


def test_a_changed_recorded_reference_is_refused_by_its_hash(demo18_onnx, tmp_path):
    for suffix in ("", ".json", ".ref.npz"):  # renamed with its sidecars, as artifacts move
        shutil.copy(f"{demo18_onnx}{suffix}", tmp_path / f"m.onnx{suffix}")
    copy = tmp_path / "m.onnx"
    ref = tmp_path / "m.onnx.ref.npz"
    data = bytearray(ref.read_bytes())
    data[100] ^= 1
    ref.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="the recorded reference was changed; refusing it"):
        read_recorded(copy, read_manifest(copy))
    ref.unlink()
    with pytest.raises(UsageError, match="the recorded reference its manifest names is missing"):
        read_recorded(copy, read_manifest(copy))
    with pytest.warns(UserWarning, match="the new artifact gets none"):  # a stage deriving a child goes on
        assert read_recorded(copy, read_manifest(copy), missing_ok=True) is None


def test_large_sets_keep_topk_for_every_sample_and_logits_within_the_budget():
    recorder = ReferenceRecorder(data="x", data_digest="d", num_classes=1000)
    rng = np.random.default_rng(0)
    for _ in range(10):
        recorder.update(rng.standard_normal((64, 1000)).astype(np.float32), np.zeros(64, np.int64))
    result = recorder.result()
    assert result.topk.shape == (640, 5) and result.logits.shape == (LOGIT_BUDGET // 1000, 1000)
    assert len(result.to_bytes()) < 1.2 * LOGIT_BUDGET * 4


def test_files_published_together_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.ref.npz", tmp_path / "a.onnx"
    with pytest.raises(RuntimeError):
        with atomic_paths(a, b) as (ta, tb):
            ta.write_bytes(b"ref")
            raise RuntimeError("crash before the artifact is written")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with atomic_paths(a, b) as (ta, tb):
        ta.write_bytes(b"ref")
        tb.write_bytes(b"model")
    assert a.read_bytes() == b"ref" and b.read_bytes() == b"model" and len(list(tmp_path.iterdir())) == 2
