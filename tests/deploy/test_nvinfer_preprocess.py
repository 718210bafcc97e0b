"""The nvinfer preprocessing emulation, read from written configuration files, on real frames."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.deploy.deepstream import write_config
from resnet_deploy.deploy.nvinfer_preprocess import NvinferPreprocess
from resnet_deploy.errors import UsageError


def _config(tmp_path, **keys):
    props = {"infer-dims": "3;32;32", "net-scale-factor": "1", "offsets": "0;0;0", "scaling-filter": "1", **keys}
    path = tmp_path / "config.txt"
    write_config(path, {k: str(v) for k, v in props.items()})
    return NvinferPreprocess.from_config(path)


def _photo():
    from sklearn.datasets import load_sample_images

    return np.ascontiguousarray(load_sample_images().images[0])  # china.jpg, 640x427


def test_formula_and_channel_order(tmp_path):
    frame = np.empty((10, 12, 3), dtype=np.uint8)
    frame[...] = (200, 100, 50)
    rgb = _config(tmp_path, **{"net-scale-factor": "0.5", "offsets": "10;20;30"}).tensor([frame])
    assert rgb.shape == (1, 3, 32, 32) and rgb.dtype == np.float32
    assert [float(rgb[0, c, 5, 5]) for c in range(3)] == [95.0, 40.0, 10.0]  # 0.5 * (x - offsets[c])
    bgr = _config(tmp_path, **{"model-color-format": "1"}).tensor([frame])
    assert [float(bgr[0, c, 0, 0]) for c in range(3)] == [50.0, 100.0, 200.0]
    nhwc = _config(tmp_path, **{"network-input-order": "1"}).tensor([frame])
    assert nhwc.shape == (1, 32, 32, 3)


def test_stretch_fills_and_pad_keeps_the_aspect_ratio(tmp_path):
    photo = _photo()
    stretched = _config(tmp_path).scaled(photo)
    assert stretched.shape == (32, 32, 3) and stretched[-1].any() and stretched[:, -1].any()
    padded = _config(tmp_path, **{"maintain-aspect-ratio": "1"}).scaled(photo)
    # 640x427 fitted into 32x32: 32 wide, int(32 * 426 / 640) = 21 high (427 rounds down to 426), black below
    assert padded[:21].any(axis=(1, 2)).all() and not padded[21:].any()
    centred = _config(tmp_path, **{"maintain-aspect-ratio": "1", "symmetric-padding": "1"}).scaled(photo)
    assert not centred[:5].any() and not centred[26:].any() and centred[5:26].any(axis=(1, 2)).all()


def test_bilinear_upscale_matches_pil(tmp_path):
    """Upscaling, PIL's bilinear and the GPU's two-tap bilinear are the same kernel: real digits agree."""
    from PIL import Image

    from resnet_deploy.data import digits_split

    nvinfer = _config(tmp_path)
    worst = 0
    for img in digits_split("eval")[0][:50]:
        rgb = np.stack([img] * 3, axis=-1)
        ours = nvinfer.scaled(rgb).astype(int)
        pil = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.BILINEAR)).astype(int)
        worst = max(worst, int(np.abs(ours - pil)[4:-4, 4:-4].max()))  # edges: PIL renormalises, GPUs clamp
    assert worst <= 1


def test_odd_sizes_round_down_to_even_and_nearest_samples(tmp_path):
    frame = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    nearest = _config(tmp_path, **{"infer-dims": "3;4;6", "scaling-filter": "0"}).scaled(frame)
    assert np.array_equal(nearest, frame[:4, :6])  # the odd last row and column are dropped, no resampling


def test_unemulated_filter_and_missing_dims_are_refused(tmp_path):
    with pytest.raises(UsageError, match="scaling-filter=2 is not emulated"):
        _config(tmp_path, **{"scaling-filter": "2"})
    path = tmp_path / "bare.txt"
    path.write_text("[property]\nnet-scale-factor=1\n")
    with pytest.raises(UsageError, match="no infer-dims"):
        NvinferPreprocess.from_config(path)
    path.write_text("[property]\ninfer-dims=3;32;32\nnet-scale-facter=1\n")
    with pytest.raises(UsageError, match="not a Gst-nvinfer key"):
        NvinferPreprocess.from_config(path)
