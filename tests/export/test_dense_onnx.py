"""Segmentation and backbone export: dynamic batch and height/width, gates per task, the runtime's task calls."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from dense_fixture import load_reference, resnet50_checkpoint, torchvision_checkpoint
from PIL import Image
from sklearn.datasets import load_sample_images

from resnet_deploy.cli.export import cli
from resnet_deploy.data import open_source
from resnet_deploy.errors import GateError, UsageError
from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
from resnet_deploy.manifest import Manifest, read_manifest
from resnet_deploy.parity import FP32_DENSE_GATES, DenseParityAccumulator
from resnet_deploy.runtime import open_session
from resnet_deploy.weights import load_model

PHOTOS = load_sample_images().filenames  # china.jpg, flower.jpg (427 x 640)
SMALL = OnnxConfig(resize=64, max_size=256, max_batch=4)


@pytest.fixture(scope="module")
def photos_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for p in PHOTOS:
        shutil.copy(p, folder)
    return folder


@pytest.fixture(scope="module")
def fcn18(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model("resnet18", None, task="segment", num_classes=5)
    path = tmp_path_factory.mktemp("fcn18") / "fcn18.onnx"
    return onnx_from_torch(loaded, path, config=SMALL)


def test_segmentation_manifest_records_task_outputs_and_size_bounds(fcn18):
    m = read_manifest(fcn18.path)
    assert (m.arch, m.task, m.num_classes, m.precision) == ("fcn_resnet18", "segment", 5, "fp32")
    assert m.input.shape == (-1, 3, -1, -1) and (m.size.min, m.size.max) == (32, 256)
    assert m.preprocess.resize == 64 and m.preprocess.crop == 0
    assert m.output == {"name": "scores", "layout": "NCHW", "size": "input"}
    assert Manifest.from_json(m.to_json()) == m
    assert m.parity["outputs"]["scores"]["max_rel_diff"] <= 1e-4  # synthetic images at two sizes, batch 1 and 3


def test_segment_returns_class_maps_at_each_images_own_size(fcn18):
    with open_session(fcn18.path, threads=2) as s:
        assert (s.task, s.sample_shape, s.output_names) == ("segment", (3, None, None), ("scores",))
        tall = np.asarray(Image.open(PHOTOS[1]).convert("RGB"))[:, :300].copy()  # 427 x 300 -> 91 x 64
        maps = s.segment([PHOTOS[0], tall])
        assert [m.shape for m in maps] == [(427, 640), (427, 300)]
        assert all(m.dtype == np.int32 and 0 <= m.min() and m.max() < 5 for m in maps)
        scores = s.run(s.prepare_dense(PHOTOS[0]))
        assert scores.shape == (1, 5, 64, 95)  # at the network input's size
        for call in (lambda: s.classify(PHOTOS[0]), lambda: s.features(scores)):
            with pytest.raises(UsageError, match="this one is a segment model: use segment()") as err:
                call()
            assert "\n" not in str(err.value)


def test_the_runtime_refuses_sizes_outside_the_manifests_bounds(fcn18):
    with open_session(fcn18.path) as s:
        s.run(np.zeros((2, 3, 32, 256), np.float32))  # the bounds themselves
        for h, w in ((31, 64), (64, 257)):
            with pytest.raises(UsageError, match=rf"{h}x{w} is outside this model's sizes \(height and width each in 32..256\)"):
                s.run(np.zeros((1, 3, h, w), np.float32))
        panorama = np.zeros((64, 600, 3), np.uint8)  # short side 64 already: 64 x 600 > 256
        with pytest.raises(UsageError, match="64x600 is outside"):
            s.segment(panorama)


def test_a_classifier_refuses_segment_and_features(demo18_onnx):
    with open_session(demo18_onnx) as s:
        assert s.task == "classify"
        with pytest.raises(UsageError, match="segment\\(\\) needs a segment artifact; this one is a classify model: use classify\\(\\)"):
            s.segment(PHOTOS[0])
        with pytest.raises(UsageError, match="features\\(\\) needs a backbone artifact"):
            s.features(np.zeros((1, 3, 224, 224), np.float32))


def test_manifests_without_a_task_are_classifiers(demo18_onnx):
    d = read_manifest(demo18_onnx).to_dict()
    del d["task"], d["size"]
    old = Manifest.from_dict(d)
    assert (old.task, old.size) == ("classify", None)
    with pytest.raises(UsageError, match="task 'detect' is none of classify, segment, backbone"):
        Manifest.from_dict({**d, "task": "detect"})


def test_backbone_cli_exports_the_chosen_stages_gated_on_real_photos(photos_folder, tmp_path):
    out = tmp_path / "r18.onnx"
    r = CliRunner().invoke(cli, ["onnx", "--arch", "resnet18", "--task", "backbone", "--outputs", "c5,c3",
                                 "--resize", "64", "--max-size", "256", "--max-batch", "4",
                                 "--eval-data", str(photos_folder), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "resnet18 backbone" in r.output and "height/width 32..256" in r.output and "cosine >=" in r.output
    m = read_manifest(out)
    assert m.output == {"names": ["c3", "c5"], "strides": [8, 32], "channels": [128, 512]}
    assert m.parity["count"] == 2 and m.parity["data"].startswith(str(photos_folder))
    with open_session(out) as s:
        feats = s.features(s.prepare_dense(PHOTOS[0]))
        assert {k: v.shape for k, v in feats.items()} == {"c3": (1, 128, 8, 12), "c5": (1, 512, 2, 3)}
        with pytest.raises(UsageError, match="this one is a backbone model: use features()"):
            s.classify(PHOTOS[0])


def test_cli_task_errors_are_one_line_exit_2(tmp_path):
    for args, want in ((["--arch", "fcn_resnet50", "--task", "backbone"], "fcn_resnet50 is a segmentation model"),
                       (["--arch", "resnet18", "--outputs", "c2"], "--outputs names a backbone's stage outputs"),
                       (["--arch", "resnet18", "--task", "backbone", "--outputs", "c9"], "comma-separated names"),
                       (["--arch", "resnet18", "--task", "segment", "--image-size", "64"], "--image-size is a classifier's crop"),
                       (["--arch", "resnet18", "--task", "segment", "--resize", "64", "--max-size", "48"], "--min-size")):
        r = CliRunner().invoke(cli, ["onnx", *args, "-o", str(tmp_path / "x.onnx")])
        assert r.exit_code == 2, (args, r.output)
        assert want in r.output, (want, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "x.onnx").exists()


def test_segmentation_gate_counts_pixels_and_fails_on_disagreement():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 4, 10, 10)).astype(np.float32)
    out = ref.copy()
    top = ref[0, :, 3, 3].argmax()
    out[0, (top + 1) % 4, 3, 3] = ref[0, top, 3, 3] + 1.0  # one pixel of 200 flips class
    acc = DenseParityAccumulator("two maps", ("scores",), segment=True)
    acc.update({"scores": ref}, {"scores": out})
    p = acc.result()
    assert (p.pixels, p.pixel_agreement) == (200, 199 / 200)
    with pytest.raises(GateError, match=r"pixel agreement 99.5000% < 99.9900%"):
        p.check(FP32_DENSE_GATES["segment"], what="the FP32 ONNX")


@pytest.mark.slow
def test_torchvision_fcn_resnet50_checkpoint_exports_and_gives_torchvisions_outputs(tmp_path):
    """torchvision's own fcn_resnet50 state_dict (aux head and all) -> ONNX -> our manifest's preprocessing -> its outputs."""
    ref = load_reference()
    ckpt = torchvision_checkpoint(ref, "fcn_resnet50", tmp_path / "fcn50.pth")
    loaded = load_model("fcn_resnet50", ckpt)
    size = int(ref["sizes"][0])
    result = onnx_from_torch(loaded, tmp_path / "fcn50.onnx", config=OnnxConfig(resize=size, max_size=256, max_batch=2))
    with open_session(result.path, threads=2) as s:
        got = np.concatenate([s.run(s.prepare_dense(p)) for p in PHOTOS])
    want = ref["fcn_resnet50"]
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9999


@pytest.mark.slow
def test_resnet50_backbone_export_gives_intermediate_layer_getters_outputs(tmp_path):
    ref = load_reference()
    loaded = load_model("resnet50", resnet50_checkpoint(ref, tmp_path / "r50.pth"), task="backbone")
    size = int(ref["sizes"][1])
    result = onnx_from_torch(loaded, tmp_path / "r50.onnx", config=OnnxConfig(resize=size, max_size=128, max_batch=2))
    with open_session(result.path, threads=2) as s:
        feats = s.features(s.prepare_dense(PHOTOS[0]))
    for name in ("c2", "c3", "c4", "c5"):
        want = ref[f"backbone_{name}"]
        assert np.abs(feats[name] - want).max() / np.abs(want).max() <= 1e-4, name


def test_the_demo_segmenter_exports_gated_on_held_out_digits_seg_with_its_miou(demo_fcn18, tmp_path):
    out = tmp_path / "fcn18-demo.onnx"
    r = CliRunner().invoke(cli, ["onnx", "--arch", "fcn_resnet18", "--weights", "demo", "-o", str(out)])
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert (m.arch, m.task, m.num_classes, m.labels) == ("fcn_resnet18", "segment", 11, demo_fcn18.labels)
    assert (m.preprocess.resize, m.preprocess.crop, m.size.min, m.size.max) == (96, 0, 32, 192)
    p = m.parity
    assert p["data"] == "digits-seg:eval (180 samples)" and p["count"] == 180 and p["pixels"] == 180 * 96 * 96
    assert p["pixel_agreement"] >= 0.9999 and p["miou_ref"] >= 0.35
    assert abs(p["miou_drop"]) <= 0.01 and p["miou"] == pytest.approx(p["miou_ref"], abs=1e-4)
    assert f"mIoU {p['miou']:.2%} (PyTorch {p['miou_ref']:.2%})" in r.output
    frame, _mask = next(open_source("digits-seg:eval").masked_frames())
    with open_session(out) as s:
        (got,) = s.segment(frame)
    assert got.shape == (96, 96) and set(np.unique(got)) - {0} <= set(range(1, 11))
