"""The demo model: real digits, deterministic, cached, accurate."""

from __future__ import annotations

import numpy as np
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
