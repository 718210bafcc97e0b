"""The demo model: real digits, deterministic, cached, accurate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_deploy.data import open_source
from resnet_deploy.demo import PREPROCESS, cache_dir


def test_demo_reaches_97_percent_on_held_out_digits(demo18):
    source = open_source("digits", split="eval")
    correct = total = 0
    for batch in source.batches(PREPROCESS, batch_size=128):
        with torch.no_grad():
            pred = demo18.model(torch.from_numpy(batch.as_input("float32", PREPROCESS))).argmax(1).numpy()
        correct += int((pred == batch.labels).sum())
        total += len(pred)
    assert total == len(source) == 540
    assert correct / total >= 0.97


def test_demo_is_cached_and_identified(demo18):
    cached = cache_dir() / "demo-resnet18-v1.safetensors"
    assert cached.is_file()
    assert demo18.weights == "demo" and len(demo18.weights_sha256) == 64
    assert demo18.labels == [str(i) for i in range(10)]


def test_digits_split_is_fixed_and_stratified():
    train, held_out = open_source("digits", split="train"), open_source("digits", split="eval")
    assert (len(train), len(held_out)) == (1257, 540)
    assert train.digest() == open_source("digits:train").digest() != held_out.digest()
    labels = next(held_out.batches(PREPROCESS, batch_size=2000)).labels
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= 50 and counts.max() <= 58  # about 30% of each class's ~180 samples


def _confusion(model, source, classes=11):
    from resnet_deploy.data import IGNORE, normalize
    from resnet_deploy.demo import SEG_PREPROCESS

    conf = np.zeros((classes, classes), np.int64)
    for frame, mask in source.masked_frames():
        with torch.no_grad():
            pred = model(torch.from_numpy(normalize(frame[None], SEG_PREPROCESS))).argmax(1)[0].numpy()
        keep = mask != IGNORE
        conf += np.bincount(mask[keep].astype(np.int64) * classes + pred[keep], minlength=classes**2).reshape(classes, -1)
    return conf


def test_demo_segmenter_is_far_above_an_all_background_guess_on_held_out_digits_seg(demo_fcn18):
    from resnet_deploy.parity import mean_iou

    conf = _confusion(demo_fcn18.model, open_source("digits-seg:eval"))
    background = np.zeros_like(conf)
    background[:, 0] = conf.sum(axis=1)  # every pixel called background
    assert mean_iou(background) < 0.09
    assert mean_iou(conf) >= 0.35
    assert (np.diag(conf)[1:] > 0).all()  # every digit class found somewhere


def test_demo_segmenter_is_cached_identified_and_loads_by_either_name(demo_fcn18):
    from resnet_deploy.errors import UsageError
    from resnet_deploy.weights import load_model

    assert (cache_dir() / "demo-fcn_resnet18-v1s1.safetensors").is_file()
    assert (demo_fcn18.arch, demo_fcn18.task, demo_fcn18.num_classes) == ("fcn_resnet18", "segment", 11)
    assert demo_fcn18.labels == ["background", *"0123456789"] and demo_fcn18.size == (32, 192)
    assert demo_fcn18.weights.data_for("segment") == "digits-seg" and demo_fcn18.weights.data_for("classify") == "digits"
    again = load_model("resnet18", "demo", task="segment")
    assert (again.arch, again.weights_sha256) == ("fcn_resnet18", demo_fcn18.weights_sha256)
    for args, want in (({"arch": "fcn_resnet34"}, "the demo segmentation weights are fcn_resnet18's"),
                       ({"arch": "fcn_resnet18", "num_classes": 21}, "the demo segmenter has 11 classes"),
                       ({"arch": "resnet18", "task": "backbone"}, "demo weights are classifiers' and a segmenter's")):
        with pytest.raises(UsageError, match=want):
            load_model(weights="demo", **args)
