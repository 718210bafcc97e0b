"""``Session.classify``: image files in, labels out, preprocessed exactly as export and evaluation do.

Two proofs: on 540 real digits written as PNG files, classify's logits are the evaluation path's
(``open_source(folder) -> batches -> as_input -> run``) bit for bit; on real photos (scikit-learn's
china.jpg and flower.jpg) through a ResNet-18 at 224, they are PyTorch's on
``normalize(resize_crop(load_image(path)))`` within 1e-3 of the largest logit, for float and uint8 input.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from resnet_deploy.data import ImageDecodeError, load_image, normalize, open_source, resize_crop
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import read_manifest
from resnet_deploy.runtime import open_session


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def folder_order(root):
    """The files of an image folder in ImageFolderSource's order: sorted class folders, sorted files."""
    return [p for d in sorted(root.iterdir()) for p in sorted(d.rglob("*.png"))]


@pytest.fixture(scope="module")
def photos() -> list[str]:
    from sklearn.datasets import load_sample_images

    return sorted(load_sample_images().filenames)  # china.jpg and flower.jpg, 640x427 RGB photos


@pytest.fixture(scope="module")
def resnet18_224(tmp_path_factory):
    """An untrained ResNet-18 (seed 0) at 224 x 224, exported with float and with uint8 input."""
    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
    from resnet_deploy.weights import load_model

    folder = tmp_path_factory.mktemp("resnet18-224")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no --weights given": intended
        loaded = load_model("resnet18", None)
    f32, u8 = folder / "r18.onnx", folder / "r18-uint8.onnx"
    onnx_from_torch(loaded, f32, config=OnnxConfig(max_batch=8))
    onnx_from_torch(loaded, u8, config=OnnxConfig(max_batch=8, input_format="uint8"))
    return loaded, f32, u8


# ----------------------------------------------------------------------------- digits as PNG files


def test_classify_on_png_files_is_the_evaluation_path(demo18_onnx, digits_png):
    m = read_manifest(demo18_onnx, required=True)
    paths = folder_order(digits_png)
    assert len(paths) == 540
    with open_session(demo18_onnx, threads=2) as sess:
        source = open_source(digits_png)
        evaluated, labels = [], []
        for batch in source.batches(m.preprocess, batch_size=64):  # classify chunks by max_batch, 64
            evaluated.append(sess.run(batch.as_input(sess.input_dtype, m.preprocess)))
            labels.append(batch.labels)
        evaluated, labels = np.concatenate(evaluated), np.concatenate(labels)
        logits = sess.image_logits([str(p) for p in paths])
        top = sess.classify(paths, topk=3)
    np.testing.assert_array_equal(logits, evaluated)
    assert [p.parent.name for p in paths] == [source.class_names[i] for i in labels]
    predicted = [row[0][0] for row in top]
    accuracy = np.mean([pred == p.parent.name for pred, p in zip(predicted, paths)])
    # the same pixels as the export's gate on digits:eval (arrays there, PNG files here)
    assert accuracy == m.parity["top1"] >= 0.97
    probs = softmax(evaluated)
    for row, p in zip(top, probs):
        assert [name for name, _ in row] == [str(i) for i in np.argsort(-p, kind="stable")[:3]]
        np.testing.assert_allclose([prob for _, prob in row], np.sort(p)[::-1][:3], rtol=1e-9)


def test_uint8_model_classifies_files_like_the_float_model(demo18_onnx, demo18_uint8_onnx, digits_png):
    paths = folder_order(digits_png)[::9]  # 60 digits, every class
    with open_session(demo18_uint8_onnx) as u8, open_session(demo18_onnx) as f32:
        a, b = u8.image_logits(paths), f32.image_logits(paths)
        assert u8.prepare(paths[:2]).dtype == np.uint8 and u8.prepare(paths[:2]).shape == (2, 32, 32, 3)
        assert [r[0][0] for r in u8.classify(paths)] == [r[0][0] for r in f32.classify(paths)]
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_classify_runs_in_chunks_of_the_batch_range(demo18_onnx, digits_png):
    paths = folder_order(digits_png)[:12]
    with open_session(demo18_onnx) as sess:
        whole = sess.image_logits(paths)
        calls = []
        real_run = sess.run
        sess.run = lambda x: calls.append(len(x)) or real_run(x)  # instance-level spy
        sess.max_batch = 5
        chunked = sess.image_logits(paths)
    assert calls == [5, 5, 2]
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


# ----------------------------------------------------------------------------- real photos


def test_classify_on_photos_matches_pytorch(resnet18_224, photos):
    from resnet_deploy.reference import TorchSession

    loaded, f32, u8 = resnet18_224
    pp = read_manifest(f32, required=True).preprocess
    assert (pp.resize, pp.crop) == (256, 224)
    x = normalize(np.stack([resize_crop(load_image(p), pp) for p in photos]), pp)
    want = TorchSession(loaded.model, image_size=224).run(x)
    for model in (f32, u8):
        with open_session(model, threads=2) as sess:
            got = sess.image_logits(photos)
            top = sess.classify(photos, topk=5)
        assert got.shape == (2, 1000)
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max(), model.name
        # probabilities by label, so a near tie between untrained classes cannot flip the check
        probs = softmax(want)
        for row, p in zip(top, probs):
            for name, prob in row:
                assert prob == pytest.approx(p[int(name)], abs=1e-4)


def test_pil_images_frames_and_single_paths_classify_like_files(resnet18_224, photos):
    _, f32, _ = resnet18_224
    rgb = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    with open_session(f32) as sess:
        want = sess.image_logits(photos)
        as_pil = sess.image_logits([Image.open(p) for p in photos])
        as_frames = sess.image_logits(rgb)
        as_batch = sess.image_logits(np.stack(rgb))  # (N, H, W, 3) uint8: a batch of frames
        bgr = [f[..., ::-1].copy() for f in rgb]  # what OpenCV hands out
        from_bgr = sess.image_logits([f[..., ::-1] for f in bgr])  # the documented conversion, a strided view
        one_path = sess.image_logits(photos[0])
        one_frame = sess.image_logits(rgb[1])
        assert len(sess.classify(photos[0], topk=3)) == 1
    for got in (as_pil, as_frames, as_batch, from_bgr):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(one_path, want[:1])
    np.testing.assert_array_equal(one_frame, want[1:])


# ----------------------------------------------------------------------------- errors


def test_classify_errors_are_one_line(demo18_onnx, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with open_session(demo18_onnx) as sess:
        with pytest.raises(UsageError, match="classify needs at least one image"):
            sess.classify([])
        with pytest.raises(ImageDecodeError, match=r"notes\.png: cannot decode image"):
            sess.classify([not_an_image])
        with pytest.raises(UsageError, match=r"image arrays must be uint8 HWC RGB \(H, W, 3\), got float32 \(8, 8, 3\)"):
            sess.classify([np.zeros((8, 8, 3), np.float32)])
        with pytest.raises(UsageError, match=r"image arrays must be uint8 HWC RGB \(H, W, 3\), got uint8 \(8, 8, 4\)"):
            sess.classify(np.zeros((8, 8, 4), np.uint8))
        with pytest.raises(UsageError, match="topk must be at least 1"):
            sess.classify([np.zeros((8, 8, 3), np.uint8)], topk=0)


def test_classify_without_a_manifest_says_why(demo18_onnx, tmp_path):
    import onnx

    model = onnx.load(str(demo18_onnx))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with open_session(bare) as sess:
        assert sess.manifest is None and sess.max_batch is None
        assert sess.run(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)  # run() still works
        with pytest.raises(UsageError, match=r"classify needs the artifact's manifest \(its preprocessing\)"):
            sess.classify([np.zeros((8, 8, 3), np.uint8)])
