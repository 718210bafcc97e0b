"""Readers and preprocessing: torchvision's preset exactly, every PIL mode to 8-bit RGB, streaming sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from resnet_deploy.data import (
    MAX_IMAGE_PIXELS,
    ImageDecodeError,
    load_image,
    normalize,
    open_source,
    resize_crop,
)
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import Preprocess

REFERENCE = Path(__file__).parent / "data" / "torchvision_reference.npz"


@pytest.mark.parametrize("resize", [232, 256])
def test_preprocessing_equals_torchvisions_preset_on_real_photos(resize):
    """The fixture holds torchvision's ImageClassification preset output for scikit-learn's photos."""
    with np.load(REFERENCE) as z:
        expected = z[f"preset_{resize}"]
        names = list(z["photos"])
    photos = {Path(p).name: p for p in load_sample_images().filenames}
    pp = Preprocess(resize=resize, crop=224)
    ours = normalize(np.stack([resize_crop(load_image(photos[n]), pp) for n in names]), pp)
    assert ours.shape == expected.shape == (2, 3, 224, 224)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


def _gradient(h=20, w=30):
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 255) // (w - 1)).astype(np.uint8), ((y * 255) // (h - 1)).astype(np.uint8)


def test_every_mode_becomes_8bit_rgb(tmp_path):
    gx, gy = _gradient()
    rgb = np.stack([gx, gy, 255 - gx], axis=-1)
    cases = {
        "gray.png": Image.fromarray(gx, "L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full_like(gx, 128)]), "RGBA"),
        "palette.png": Image.fromarray(rgb, "RGB").quantize(64),
        "cmyk.jpg": Image.fromarray(rgb, "RGB").convert("CMYK"),
        "gray16.png": Image.fromarray(gx.astype(np.uint16) * 257),  # mode I;16
        "bw.png": Image.fromarray(gx > 127),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        out = load_image(tmp_path / name)
        assert out.mode == "RGB" and out.size == (30, 20), name
    arr = np.asarray(load_image(tmp_path / "gray16.png"))
    # 16-bit values are rescaled to 8 bits, not clipped at 255 (PIL's own convert would clip).
    np.testing.assert_array_equal(arr[..., 0], gx)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "gray.png"))[..., 1], gx)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgba.png")), rgb)
    cmyk = np.asarray(load_image(tmp_path / "cmyk.jpg")).astype(int)
    assert np.abs(cmyk - rgb).mean() < 8  # JPEG loss only


def test_decompression_bomb_rejected_before_decoding(tmp_path):
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
    Image.new("1", (side, side)).save(tmp_path / "bomb.png", optimize=True)
    assert (tmp_path / "bomb.png").stat().st_size < 2_000_000
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")


def test_folder_source_labels_skips_and_counts(tmp_path):
    x, y = _digits_images(30)
    for i, (img, label) in enumerate(zip(x, y)):
        (tmp_path / f"{label}").mkdir(exist_ok=True)
        Image.fromarray(img, "L").save(tmp_path / f"{label}" / f"{i:03d}.png")
    (tmp_path / "0" / "notes.txt").write_text("not an image")
    (tmp_path / "1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    src = open_source(tmp_path)
    assert src.class_names == [f"{i}" for i in sorted(set(y.tolist()))]
    assert len(src) == 31 and src.skipped == 1  # the text file
    pp = Preprocess(resize=32, crop=32)
    with pytest.warns(UserWarning, match="broken.jpg"):
        batches = list(src.batches(pp, batch_size=8))
    assert sum(len(b) for b in batches) == 30 and src.skipped == 2
    labels = np.concatenate([b.labels for b in batches])  # numeric folder names are the class indices
    assert sorted(labels.tolist()) == sorted(y.tolist())
    assert batches[0].as_input("float32", pp).shape == (8, 3, 32, 32)
    assert batches[0].as_input("uint8", pp).shape == (8, 32, 32, 3)


def test_folder_source_matches_digits_arrays(tmp_path):
    """PNG files of the digits give exactly the tensors the in-memory digits source gives."""
    x, y = _digits_images(20)
    for i, img in enumerate(x):
        Image.fromarray(img, "L").save(tmp_path / f"{i:03d}.png")
    pp = Preprocess(resize=32, crop=32)
    from_files = next(open_source(tmp_path).batches(pp, batch_size=64))
    assert from_files.labels is None  # flat folder: unlabelled
    from resnet_deploy.data import ArraySource

    from_arrays = next(ArraySource(x, y, description="digits").batches(pp, batch_size=64))
    np.testing.assert_array_equal(from_files.images, from_arrays.images)


def test_npy_npz_sources(tmp_path):
    x, y = _digits_images(12)
    np.save(tmp_path / "imgs.npy", x)
    np.savez(tmp_path / "lab.npz", images=x, labels=y)
    pp = Preprocess(resize=32, crop=32)
    tensors = normalize(next(open_source(tmp_path / "lab.npz").batches(pp, batch_size=64)).images, pp)
    np.savez(tmp_path / "float.npz", x=tensors, y=y)
    a = next(open_source(tmp_path / "imgs.npy").batches(pp, batch_size=64))
    b = next(open_source(tmp_path / "lab.npz").batches(pp, batch_size=64))
    c = next(open_source(tmp_path / "float.npz").batches(pp, batch_size=64))
    assert a.labels is None and np.array_equal(b.labels, y)
    np.testing.assert_array_equal(c.as_input("float32", pp), tensors)
    with pytest.raises(UsageError, match="uint8-input model needs images"):
        c.as_input("uint8", pp)
    bad = tensors.copy()
    bad[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad)
    with pytest.raises(UsageError, match="NaN"):
        open_source(tmp_path / "nan.npz")


def test_count_picks_a_seeded_sorted_subset():
    a = open_source("digits", split="train", count=100)
    b = open_source("digits", split="train", count=100)
    c = open_source("digits", split="train", count=100, seed=1)
    assert len(a) == 100 and a.digest() == b.digest() != c.digest()


def test_bad_specs(tmp_path):
    for spec, pattern in (("digits:test", "train' or 'eval"), (tmp_path / "missing", "no such"),
                          (tmp_path, "no image files")):
        with pytest.raises(UsageError, match=pattern):
            open_source(spec)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(UsageError, match="unsupported data file"):
        open_source(tmp_path / "x.csv")


def _digits_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    from resnet_deploy.data import digits_split

    x, y = digits_split("train")
    return x[:n], y[:n]


def test_class_names_map_to_the_models_classes_by_name(tmp_path):
    """docs/reliability.md case 26: by the model's labels where it has them, numeric names otherwise."""
    from types import SimpleNamespace

    from resnet_deploy.data import class_indices

    labels = ["tench", "goldfish", "shark"]
    assert class_indices(["shark", "tench"], labels=labels, num_classes=3, origin="d") == [2, 0]
    assert class_indices(["7", "3"], labels=None, num_classes=10, origin="d") == [7, 3]
    with pytest.raises(UsageError, match="class 'cat' is not one of the model's 3 classes"):
        class_indices(["cat"], labels=labels, num_classes=3, origin="d")
    with pytest.raises(UsageError, match="class '12' is not a class index 0..9"):
        class_indices(["12"], labels=None, num_classes=10, origin="d")
    x, _ = _digits_images(4)
    for i, name in enumerate(["shark", "goldfish"]):  # sorted folder order is the reverse of the model's
        (tmp_path / name).mkdir()
        for j in range(2):
            Image.fromarray(x[2 * i + j], "L").save(tmp_path / name / f"{j}.png")
    src = open_source(tmp_path).for_model(SimpleNamespace(labels=labels, num_classes=3))
    pp = Preprocess(resize=32, crop=32)
    assert np.concatenate([b.labels for b in src.batches(pp, batch_size=3)]).tolist() == [1, 1, 2, 2]
    unbound = open_source(tmp_path)  # names that are not numbers, no model: no labels rather than made-up ones
    assert all(b.labels is None for b in unbound.batches(pp, batch_size=4))


def test_an_integer_npz_is_told_its_dtype(tmp_path):
    path = tmp_path / "ints.npz"
    np.savez(path, images=np.zeros((4, 8, 8), np.int32), labels=np.zeros(4, np.int64))
    with pytest.raises(UsageError, match="int32 data is not supported"):
        open_source(path)


def test_an_undecodable_file_is_noted_once_and_not_counted(tmp_path, recwarn):
    import warnings

    x, _ = _digits_images(3)
    for i, img in enumerate(x):
        Image.fromarray(img, "L").save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    warnings.simplefilter("default")
    pp = Preprocess(resize=32, crop=32)
    for src in (open_source(tmp_path), open_source(tmp_path)):  # two sources of one folder, two passes each
        for _ in range(2):
            assert sum(len(b) for b in src.batches(pp, batch_size=2)) == 3
        assert src.description.endswith("(3 images)") and src.skipped == 1
    assert len([w for w in recwarn if "broken.png" in str(w.message)]) == 1
