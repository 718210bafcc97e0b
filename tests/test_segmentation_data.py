"""Segmentation data: digits-seg (built from the real digits), VOC-layout folders, and the mIoU."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resnet_deploy.data import (
    DIGITS_SEG_LABELS,
    DIGITS_SEG_RIM,
    DIGITS_SEG_STROKE,
    IGNORE,
    digits_seg_split,
    digits_split,
    normalize,
    open_source,
)
from resnet_deploy.errors import GateError, UsageError
from resnet_deploy.parity import INT8_DENSE_GATES, DenseParityAccumulator, mean_iou


def test_digits_seg_is_deterministic_and_uses_each_digit_of_its_split_once():
    train, held_out = open_source("digits-seg:train"), open_source("digits-seg", split="eval")
    assert (len(train), len(held_out)) == (419, 180)  # 1,257 and 540 digits, three to a canvas
    assert train.has_masks and held_out.description == "digits-seg:eval (180 samples)"
    assert train.digest() == open_source("digits-seg", split="train").digest() != held_out.digest()
    for split in ("train", "eval"):
        _images, _masks, digits = digits_seg_split(split)
        assert sorted(digits.ravel()) == list(range(len(digits_split(split)[0])))
    # train and held-out canvases hold different real digits: no 8x8 image of one split is in the other
    seen = {img.tobytes() for img in digits_split("train")[0]}
    assert not any(img.tobytes() in seen for img in digits_split("eval")[0][np.unique(digits_seg_split("eval")[2])])
    assert digits_seg_split("train", round=1)[0].tobytes() != digits_seg_split("train")[0].tobytes()


def test_digits_seg_masks_are_the_digits_classes_on_their_strokes():
    images, masks, digits = digits_seg_split("eval")
    _x, y = digits_split("eval")
    assert images.shape == masks.shape == (180, 96, 96) and images.dtype == masks.dtype == np.uint8
    assert np.array_equal(masks == 0, images < DIGITS_SEG_RIM)
    assert np.array_equal(masks == IGNORE, (images >= DIGITS_SEG_RIM) & (images < DIGITS_SEG_STROKE))
    for n in range(len(images)):
        stroke = masks[n][(masks[n] != 0) & (masks[n] != IGNORE)]
        assert set(np.unique(stroke)) <= {int(d) + 1 for d in y[digits[n]]}
    stroke = (masks != 0) & (masks != IGNORE)
    assert 0.05 < stroke.mean() < 0.2 and (masks == 0).mean() > 0.7
    frame, mask = next(open_source("digits-seg:eval").masked_frames())
    assert frame.shape == (96, 96, 3) and np.array_equal(frame[..., 0], images[0]) and np.array_equal(mask, masks[0])


def test_digits_seg_masks_map_to_a_models_classes_by_name():
    model = type("M", (), {"labels": list(reversed(DIGITS_SEG_LABELS)), "num_classes": 11})()
    _frame, mask = next(open_source("digits-seg:eval").for_model(model).masked_frames())
    _images, masks, _ = digits_seg_split("eval")
    assert np.array_equal(mask, np.where(masks[0] == IGNORE, IGNORE, 10 - masks[0].astype(int)))
    with pytest.raises(UsageError, match="class 'background' is not one of the model's 2 classes"):
        open_source("digits-seg:eval").for_model(type("M", (), {"labels": ["a", "b"], "num_classes": 2})())


def test_miou_equals_a_hand_computed_confusion_matrix():
    # 3 classes, one 2x4 image; 255 is never scored.
    mask = np.array([[0, 0, 1, 1], [2, 2, 255, 0]], np.uint8)
    ref_map = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])  # exact
    out_map = np.array([[0, 1, 1, 1], [2, 0, 0, 0]])
    def scores(m):
        return np.eye(3, dtype=np.float32)[m].transpose(2, 0, 1)[None]
    acc = DenseParityAccumulator("hand", ("scores",), segment=True)
    acc.update({"scores": scores(ref_map)}, {"scores": scores(out_map)}, [mask])
    p = acc.result()
    # out vs truth: class 0: tp 2 (of 3 true), fp 1 -> 2/4; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    assert p.miou_ref == 1.0 and p.miou == pytest.approx((2 / 4 + 2 / 3 + 1 / 2) / 3)
    assert p.miou_drop == pytest.approx(100 * (1 - p.miou))
    assert (p.pixels, p.pixel_agreement) == (8, 5 / 8)  # agreement counts every pixel, 255 too
    assert np.array_equal(acc.confusion["out"], [[2, 1, 0], [0, 2, 0], [1, 0, 1]])
    # a class neither in the masks nor predicted does not count; one predicted only scores 0
    assert mean_iou(np.array([[3, 0, 0], [0, 1, 0], [0, 0, 0]])) == 1.0
    assert mean_iou(np.array([[3, 1, 0], [0, 0, 0], [0, 0, 0]])) == pytest.approx((3 / 4 + 0) / 2)


def test_the_miou_gate_passes_and_fails_on_the_drop():
    mask = np.zeros((1, 10), np.uint8)
    mask[0, 5:] = 1
    good = np.zeros((1, 2, 1, 10), np.float32)
    good[0, 1, 0, 5:] = 1
    worse = good.copy()
    worse[0, 1, 0, 5] = 0  # one pixel of class 1 lost: IoU 1 -> 4/5, 1 -> 5/6
    acc = DenseParityAccumulator("d", ("scores",), segment=True)
    acc.update({"scores": good}, {"scores": worse}, [mask])
    p = acc.result()
    assert p.miou_drop == pytest.approx(100 * (1 - (5 / 6 + 4 / 5) / 2))
    with pytest.raises(GateError, match=r"mIoU drop 18.33 points > 1.00"):
        p.check(INT8_DENSE_GATES["segment"], what="INT8")
    same = DenseParityAccumulator("d", ("scores",), segment=True)
    same.update({"scores": good}, {"scores": good}, [mask])
    assert same.result().failures(INT8_DENSE_GATES["segment"]) == []
    unmasked = DenseParityAccumulator("d", ("scores",), segment=True)
    unmasked.update({"scores": good}, {"scores": worse})  # no masks: agreement 90% stands in, and fails
    assert unmasked.result().miou is None
    assert "no masks, so agreement stands in" in unmasked.result().failures(INT8_DENSE_GATES["segment"])[0]


def test_a_mask_with_a_class_the_model_lacks_is_one_usage_error():
    acc = DenseParityAccumulator("d", ("scores",), segment=True)
    scores = np.zeros((1, 2, 1, 2), np.float32)
    with pytest.raises(UsageError, match="a mask holds class 7, the model has 2 classes"):
        acc.update({"scores": scores}, {"scores": scores}, [np.array([[7, 255]], np.uint8)])


def _voc_root(tmp_path, *, n=3, size=(40, 30)):
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    images, masks, _ = digits_seg_split("eval")
    palette = [v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)]
    for i in range(n):
        Image.fromarray(images[i]).resize(size).convert("RGB").save(root / "JPEGImages" / f"2007_{i:06d}.jpg")
        label = Image.fromarray(masks[i]).resize(size, Image.NEAREST)
        if i % 2 == 0:  # VOC's own maps are palette images: the values are the indices, not the colours
            label = label.convert("P")
            label.putpalette(palette)
        label.save(root / "SegmentationClass" / f"2007_{i:06d}.png")
    Image.fromarray(images[9]).save(root / "JPEGImages" / "2008_000009.jpg")  # no map: not in a list
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000002\n2007_000000\n")
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n")
    return root, [np.asarray(Image.fromarray(m).resize(size, Image.NEAREST)) for m in masks[:n]]


def test_a_voc_root_reads_its_split_lists_and_palette_maps(tmp_path):
    root, want = _voc_root(tmp_path)
    val = open_source(root)  # eval: val.txt, in its order
    assert val.has_masks and len(val) == 2 and val.description == f"{root} (val) (2 images with masks)"
    got = list(val.masked_frames())
    assert [f.shape for f, _ in got] == [(30, 40, 3)] * 2
    assert np.array_equal(got[0][1], want[2]) and np.array_equal(got[1][1], want[0])
    assert IGNORE in got[0][1] and got[0][1].max() == IGNORE
    assert len(open_source(root, split="train")) == 1
    assert val.digest() == open_source(root).digest() != open_source(root, split="train").digest()
    (root / "ImageSets/Segmentation/val.txt").unlink()  # no lists: every image that has a map
    assert len(open_source(root)) == 3


def test_images_and_masks_folders_pair_by_name_and_refuse_bad_input_in_one_line(tmp_path):
    root, _want = _voc_root(tmp_path)
    pair = f"{root / 'JPEGImages'}:{root / 'SegmentationClass'}"
    with pytest.raises(UsageError, match=r"1 of 4 images have no label map \(first: 2008_000009.jpg has no 2008_000009.png\)"):
        open_source(pair)
    (root / "JPEGImages" / "2008_000009.jpg").unlink()
    assert len(open_source(pair)) == 3
    Image.fromarray(np.zeros((30, 41), np.uint8)).save(root / "SegmentationClass" / "2007_000001.png")
    with pytest.raises(UsageError, match=r"2007_000001.png: the label map is 41x30, its image 2007_000001.jpg 40x30"):
        open_source(pair)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / "SegmentationClass" / "2007_000001.png")
    source = open_source(pair)
    with pytest.raises(UsageError, match="must be a palette or 8-bit grayscale PNG of class indices, not mode RGB"):
        list(source.masked_frames())
    with pytest.raises(UsageError, match="not a folder"):
        open_source(f"{root / 'JPEGImages'}:{tmp_path / 'nowhere'}")


def test_bad_digits_seg_specs_are_one_line_usage_errors():
    with pytest.raises(UsageError, match="digits-seg split must be 'train' or 'eval', got 'test'"):
        open_source("digits-seg:test")


def test_an_npz_with_masks_is_segmentation_data(tmp_path):
    images, masks, _ = digits_seg_split("eval")
    np.savez(tmp_path / "seg.npz", images=images[:5], masks=masks[:5])
    source = open_source(tmp_path / "seg.npz")
    assert source.has_masks and len(source) == 5
    assert all(np.array_equal(m, masks[i]) for i, (_f, m) in enumerate(source.masked_frames()))
    np.savez(tmp_path / "both.npz", images=images[:5], masks=masks[:5], labels=np.zeros(5))
    with pytest.raises(UsageError, match="holds both 'labels' \\(classification\\) and 'masks'"):
        open_source(tmp_path / "both.npz")
    np.savez(tmp_path / "short.npz", images=images[:5], masks=masks[:4])
    with pytest.raises(UsageError, match="masks must be uint8 \\(N, H, W\\) matching the images"):
        open_source(tmp_path / "short.npz")


def test_masks_are_scored_at_the_scores_size_resized_nearest(demo_fcn18):
    """At another ``resize`` than the canvas (48 for 96), each mask is resized nearest to the scores' 48x48."""
    from resnet_deploy.manifest import Preprocess
    from resnet_deploy.parity import measure_dense_parity
    from resnet_deploy.reference import TorchSession

    ref = TorchSession(demo_fcn18.model, image_size=None, output_names=("scores",))
    source = open_source("digits-seg:eval", count=6)
    p = measure_dense_parity(ref, ref, source, Preprocess(resize=48, crop=0), segment=True)
    assert (p.count, p.pixels, p.pixel_agreement, p.miou_drop) == (6, 6 * 48 * 48, 1.0, 0.0)
    acc = DenseParityAccumulator("by hand", ("scores",), segment=True)
    for frame, mask in source.masked_frames():
        small = np.asarray(Image.fromarray(frame).resize((48, 48), Image.BILINEAR))[None]
        out = ref.run_outputs(normalize(small, Preprocess(resize=48, crop=0)))
        acc.update(out, out, [mask[1::2, 1::2]])  # PIL's nearest 96 -> 48 takes the odd rows and columns
    assert acc.result().miou_ref == p.miou_ref and 0.0 < p.miou_ref < 1.0


def test_a_voc_folder_of_digits_seg_canvases_scores_as_digits_seg_does(demo_fcn18, tmp_path):
    from resnet_deploy.demo import SEG_PREPROCESS
    from resnet_deploy.parity import measure_dense_parity
    from resnet_deploy.reference import TorchSession

    images, masks, _ = digits_seg_split("eval")
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    for i in range(12):
        Image.fromarray(images[i]).convert("RGB").save(root / "JPEGImages" / f"{i:02d}.png")  # lossless
        label = Image.fromarray(masks[i]).convert("P") if i % 2 else Image.fromarray(masks[i])
        label.save(root / "SegmentationClass" / f"{i:02d}.png")
    ref = TorchSession(demo_fcn18.model, image_size=None, output_names=("scores",))
    voc = measure_dense_parity(ref, ref, open_source(root), SEG_PREPROCESS, segment=True)
    acc = DenseParityAccumulator("the same canvases", ("scores",), segment=True)
    for i in range(12):
        out = ref.run_outputs(normalize(np.repeat(images[i][None, ..., None], 3, axis=-1), SEG_PREPROCESS))
        acc.update(out, out, [masks[i]])
    assert voc.count == 12 and voc.miou_ref == acc.result().miou_ref > 0.3
