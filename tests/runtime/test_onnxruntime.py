"""The ONNX Runtime session end to end on exported models: FP32 and uint8 input, manifests, I/O binding,
threads, providers.

FP16 and INT8 (both targets) come from ``fp16_from_onnx``/``int8_from_onnx``; those tests skip
while that code is absent from the tree.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest

from resnet_deploy.data import open_source
from resnet_deploy.errors import MissingDependencyError, UsageError
from resnet_deploy.manifest import manifest_path, read_manifest
from resnet_deploy.parity import measure_parity
from resnet_deploy.reference import TorchSession
from resnet_deploy.runtime import open_session
from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession, ort_providers

HAS_NVIDIA_GPU = os.path.exists("/dev/nvidiactl")


@pytest.fixture(scope="module")
def manifest(demo18_onnx):
    return read_manifest(demo18_onnx, required=True)


@pytest.fixture(scope="module")
def eval_images(manifest):
    """digits:eval, resized and cropped: uint8 NHWC."""
    return np.concatenate([b.images for b in open_source("digits").batches(manifest.preprocess, batch_size=128)])


def test_fp32_session_matches_pytorch_on_digits(demo18, demo18_onnx, manifest):
    ref = TorchSession(demo18.model, image_size=32)
    with open_session(demo18_onnx, threads=2) as sess:
        parity = measure_parity(ref, sess, open_source("digits"), manifest.preprocess, batch_size=64)
    assert parity.count == 540 and parity.nonfinite == 0
    assert parity.top1_agreement == 1.0 and parity.max_rel_diff <= 1e-4
    assert parity.top1 == manifest.parity["top1"] >= 0.97


def test_uint8_session_takes_raw_images_and_answers_like_fp32(demo18_onnx, demo18_uint8_onnx, eval_images, manifest):
    with open_session(demo18_uint8_onnx, threads=2) as u8, open_session(demo18_onnx, threads=2) as f32:
        assert (u8.input_dtype, u8.sample_shape, u8.manifest.input.layout) == ("uint8", (32, 32, 3), "NHWC")
        a = np.concatenate([u8.run(eval_images[i : i + 64]) for i in range(0, 540, 64)])
        b = np.concatenate([f32.run(sample) for sample in _normalised(eval_images, manifest)])
        with pytest.raises(UsageError, match=r"this model takes a uint8 array of shape \(N, 32, 32, 3\) with N in 1\.\.64"):
            u8.run(eval_images[:4].astype(np.float32))
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert (a.argmax(1) == b.argmax(1)).all()


def _normalised(images, manifest):
    from resnet_deploy.data import normalize

    for i in range(0, len(images), 64):
        yield normalize(images[i : i + 64], manifest.preprocess)


def test_threads_option_sets_intra_op_threads(demo18_onnx, eval_images, manifest):
    x = next(_normalised(eval_images, manifest))
    with open_session(demo18_onnx, threads=1) as one, open_session(demo18_onnx, threads=2) as two:
        assert one.session_options.intra_op_num_threads == 1 and two.session_options.intra_op_num_threads == 2
        assert two.description == "onnxruntime cpu, 2 threads"
        np.testing.assert_allclose(one.run(x), two.run(x), rtol=0, atol=1e-5)
    with pytest.raises(UsageError, match="threads must be at least 1, got 0"):
        open_session(demo18_onnx, threads=0)


@pytest.mark.parametrize("n", [1, 7, 64])
def test_io_binding_gives_the_same_logits_in_fresh_arrays(demo18_onnx, eval_images, manifest, n):
    x = next(_normalised(eval_images, manifest))[:n]
    with open_session(demo18_onnx) as plain, open_session(demo18_onnx, io_binding=True) as bound:
        assert not plain.io_binding and bound.io_binding  # CPU default: off (it measured no gain)
        first = bound.run(x)
        kept = first.copy()
        second = bound.run(x[::-1].copy())  # same batch size: the bound output buffer is reused
        np.testing.assert_array_equal(first, kept)  # ... but never the array the caller holds
        np.testing.assert_array_equal(first, plain.run(x))
        np.testing.assert_array_equal(second, plain.run(x[::-1].copy()))


@pytest.mark.parametrize("io_binding", [False, True])
def test_one_session_is_safe_from_many_threads(demo18_onnx, eval_images, manifest, io_binding):
    batches = list(_normalised(eval_images, manifest))  # 9 batches, sizes 64 .. 28
    with open_session(demo18_onnx, threads=1, io_binding=io_binding) as sess:
        assert sess.thread_safe
        expected = [sess.run(b) for b in batches]
        results: dict[tuple[int, int], np.ndarray] = {}
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for rep in range(3):
                    for i in range(worker % 3, len(batches), 2):
                        results[(worker, rep * 100 + i)] = (i, sess.run(batches[i]))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(results) > 30
    for i, logits in results.values():
        np.testing.assert_array_equal(logits, expected[i])


def test_manifest_comes_from_onnx_metadata_without_a_sidecar(demo18_onnx, manifest, tmp_path):
    bare = tmp_path / "no-sidecar.onnx"
    shutil.copy(demo18_onnx, bare)
    assert read_manifest(bare) is None
    with open_session(bare) as sess:
        embedded = sess.manifest
    assert embedded is not None
    assert embedded.preprocess == manifest.preprocess and embedded.labels == manifest.labels
    assert embedded.parity == manifest.parity and (sess.min_batch, sess.max_batch) == (1, 64)
    assert "sha256" not in embedded.source  # the embedded copy cannot hold its own file's hash


def test_another_artifacts_sidecar_is_refused(demo18_onnx, demo18_uint8_onnx, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(demo18_onnx, model)
    shutil.copy(manifest_path(demo18_uint8_onnx), manifest_path(model))
    with pytest.raises(UsageError, match="does not match the sha256 recorded in its manifest"):
        open_session(model)
    other = json.loads(manifest_path(demo18_uint8_onnx).read_text())
    del other["source"]["sha256"]  # a manifest without the file's hash: its input spec still gives it away
    manifest_path(model).write_text(json.dumps(other))
    with pytest.raises(UsageError, match=r"its manifest describes input 'input' uint8 \[-1, 32, 32, 3\] but the model "
                                         r"takes 'input' float32 \(N, 3, 32, 32\); is the manifest another artifact's\?"):
        open_session(model)
    data = json.loads(manifest_path(demo18_onnx).read_text())
    data["num_classes"], data["labels"] = 1000, None
    manifest_path(model).write_text(json.dumps(data))
    with pytest.raises(UsageError, match="its manifest says 1000 classes but the model outputs 10"):
        open_session(model)
    manifest_path(model).write_text("{not json")
    with pytest.raises(UsageError, match="manifest is not valid JSON"):
        open_session(model)


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", b"\x08\x07\x12\x04"], ids=["empty", "text", "truncated"])
def test_a_file_that_is_not_onnx_is_one_usage_error(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"broken\.onnx: onnxruntime cannot load it \(") as info:
        open_session(path)
    assert "\n" not in str(info.value)


def test_unknown_provider_is_a_usage_error(demo18_onnx):
    with pytest.raises(UsageError, match=r"unknown provider 'gpu' \(choose from cpu, cuda, tensorrt\)"):
        open_session(demo18_onnx, provider="gpu")


def test_provider_missing_from_the_onnxruntime_build_says_what_to_install(demo18_onnx, monkeypatch):
    import onnxruntime

    # what a CPU-only `onnxruntime` wheel reports (onnxruntime-gpu lists its GPU providers even without a GPU)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(MissingDependencyError, match=r"this onnxruntime build has no CUDAExecutionProvider \(it has "
                                                     r"CPUExecutionProvider\): install onnxruntime-gpu in its place"):
        open_session(demo18_onnx, provider="cuda")


@pytest.mark.skipif(HAS_NVIDIA_GPU, reason="this host has an NVIDIA GPU: the providers may really start")
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_without_a_gpu_is_an_error_not_a_silent_cpu_fallback(demo18_onnx, tmp_path, provider):
    with pytest.raises(MissingDependencyError, match=r"could not start \w+ExecutionProvider here and fell back to "
                                                     r"CPUExecutionProvider") as info:
        open_session(demo18_onnx, provider=provider, trt_cache_dir=tmp_path / "cache")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not HAS_NVIDIA_GPU, reason="needs an NVIDIA GPU with CUDA 12 and cuDNN 9 for onnxruntime-gpu")
@pytest.mark.cuda
@pytest.mark.parametrize("io_binding", [False, True])
def test_cuda_provider_matches_the_cpu(demo18_onnx, eval_images, manifest, io_binding):
    x = next(_normalised(eval_images, manifest))
    with open_session(demo18_onnx, provider="cuda", io_binding=io_binding) as gpu, open_session(demo18_onnx) as cpu:
        assert gpu.raw.get_providers()[0] == "CUDAExecutionProvider"
        for n in (1, 7, 64):
            want = cpu.run(x[:n])
            assert np.abs(gpu.run(x[:n]) - want).max() <= 1e-3 * np.abs(want).max()


def test_tensorrt_provider_options_follow_the_manifest(demo18_onnx, manifest, tmp_path):
    cache = tmp_path / "trt-cache"
    (trt_name, trt), cuda, cpu = ort_providers("tensorrt", model=demo18_onnx, manifest=manifest, device_id=1,
                                               trt_cache_dir=cache)
    assert (trt_name, cuda, cpu) == ("TensorrtExecutionProvider", ("CUDAExecutionProvider", {"device_id": 1}),
                                     "CPUExecutionProvider")
    assert cache.is_dir() and trt["trt_engine_cache_enable"] and trt["trt_engine_cache_path"] == str(cache)
    assert trt["trt_profile_min_shapes"] == "input:1x3x32x32"
    assert trt["trt_profile_opt_shapes"] == "input:8x3x32x32"
    assert trt["trt_profile_max_shapes"] == "input:64x3x32x32"
    assert not trt["trt_fp16_enable"] and not trt["trt_int8_enable"]  # FP32 stays FP32
    (_, int8), *_ = ort_providers("tensorrt", model=demo18_onnx, manifest=manifest.derive(precision="int8"),
                                  trt_cache_dir=cache)
    assert int8["trt_int8_enable"] and not int8["trt_fp16_enable"]
    assert ort_providers("cpu", model=demo18_onnx) == ["CPUExecutionProvider"]
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(UsageError, match="cannot create the TensorRT engine cache"):
        ort_providers("tensorrt", model=demo18_onnx, trt_cache_dir=blocked / "sub")


def test_session_is_an_onnxruntime_session_with_the_raw_one_exposed(demo18_onnx, eval_images, manifest):
    x = next(_normalised(eval_images, manifest))
    with OnnxRuntimeSession(demo18_onnx) as sess:  # constructed directly: the manifest comes from metadata
        assert sess.manifest is not None and sess.max_batch == 64
        (bare,) = sess.raw.run(["logits"], {"input": x})
        np.testing.assert_array_equal(sess.run(x), bare)


# ----------------------------------------------------------------------------- FP16 and INT8 artifacts


@pytest.fixture(scope="module")
def reduced(demo18_onnx, tmp_path_factory):
    """The demo FP32 ONNX converted to FP16 and quantized to INT8 for both targets, each gated on digits:eval."""
    pytest.importorskip("resnet_deploy.export.fp16", reason="fp16_from_onnx has not landed")
    pytest.importorskip("resnet_deploy.export.int8", reason="int8_from_onnx has not landed")
    from resnet_deploy.calibration.gate import Int8Config
    from resnet_deploy.export.fp16 import fp16_from_onnx
    from resnet_deploy.export.int8 import int8_from_onnx

    folder = tmp_path_factory.mktemp("reduced")
    out = {"fp16": folder / "demo18.fp16.onnx"}
    fp16_from_onnx(demo18_onnx, out["fp16"], calib_source=open_source("digits", split="train", count=32))
    for target in ("cpu", "tensorrt"):
        out[f"int8-{target}"] = folder / f"demo18.int8-{target}.onnx"
        int8_from_onnx(demo18_onnx, out[f"int8-{target}"], calib_source=open_source("digits", split="train", count=256),
                       config=Int8Config(target=target, cache_dir=folder / "cache", use_cache=False))
    return out


@pytest.mark.parametrize("kind", ["fp16", "int8-cpu", "int8-tensorrt"])
def test_reduced_precision_sessions_answer_like_fp32(reduced, demo18_onnx, eval_images, manifest, digits_png, kind):
    with open_session(reduced[kind], threads=2) as sess, open_session(demo18_onnx, threads=2) as f32:
        precision = kind.split("-")[0]
        assert sess.manifest.precision == precision
        assert (sess.input_dtype, sess.sample_shape, sess.max_batch) == ("float32", (3, 32, 32), 64)  # FP32 I/O kept
        got = np.concatenate([sess.run(x) for x in _normalised(eval_images, manifest)])
        want = np.concatenate([f32.run(x) for x in _normalised(eval_images, manifest)])
        paths = sorted(digits_png.glob("[0-9]/*.png"))[::27]
        np.testing.assert_array_equal(sess.image_logits(paths), sess.run(sess.prepare(paths)))
        top1 = [row[0][0] for row in sess.classify(paths, topk=1)]
    assert np.isfinite(got).all() and got.dtype == np.float32
    agreement = (got.argmax(1) == want.argmax(1)).mean()
    labels = np.concatenate([b.labels for b in open_source("digits").batches(manifest.preprocess, batch_size=128)])
    drop = 100 * ((want.argmax(1) == labels).mean() - (got.argmax(1) == labels).mean())
    if precision == "fp16":
        assert agreement >= 0.995 and drop <= 0.2
    else:
        assert drop <= 1.0 and agreement >= 0.97
    assert np.mean([t == p.parent.name for t, p in zip(top1, paths)]) >= 0.9
    # what the TensorRT EP would be told for this artifact
    (_, trt), *_ = ort_providers("tensorrt", model=reduced[kind], manifest=sess.manifest,
                                 trt_cache_dir=reduced[kind].parent / "trt-cache")
    assert (trt["trt_fp16_enable"], trt["trt_int8_enable"]) == (precision == "fp16", precision == "int8")


def test_both_onnxruntime_flavours_installed_warns_once(demo18_onnx, tmp_path, monkeypatch):
    """x86-64 `[export,cpu]`: pip installs onnxruntime-gpu and onnxruntime into one folder; say so."""
    from importlib.metadata import version

    from resnet_deploy.runtime import onnxruntime as ort_module

    installed = {name for name in ("onnxruntime", "onnxruntime-gpu") if _installed(name)}
    missing = ({"onnxruntime", "onnxruntime-gpu"} - installed).pop()
    dist = tmp_path / f"{missing.replace('-', '_')}-1.23.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {missing}\nVersion: 1.23.2\n")
    monkeypatch.setattr(ort_module, "_WARNED_FLAVOURS", [])
    with pytest.warns(RuntimeWarning, match="overwrite each other's files") as caught:
        monkeypatch.syspath_prepend(str(tmp_path))
        assert version(missing) == "1.23.2"
        OnnxRuntimeSession(demo18_onnx).close()
        OnnxRuntimeSession(demo18_onnx).close()
    assert len([w for w in caught if "overwrite" in str(w.message)]) == 1


def _installed(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False
