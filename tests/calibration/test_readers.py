"""Calibration sets: spooled once, streamed back in batches, digested over what the model sees."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from resnet_deploy import demo
from resnet_deploy.calibration.readers import SetReader, calibration_batch_size, spool_calibration
from resnet_deploy.data import MIN_CALIBRATION_IMAGES, digits_split, normalize, open_source
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import Preprocess

PP = demo.PREPROCESS


def folder(parent, name):
    path = parent / name
    path.mkdir()
    return path


def test_spool_reads_back_every_sample_in_order(tmp_path):
    source = open_source("digits", split="train", count=40)
    cset = spool_calibration(source, PP, tmp_path)
    assert (cset.count, cset.skipped, cset.dtype, cset.sample_shape) == (40, 0, "uint8", (32, 32, 3))
    expected = np.concatenate([b.images for b in source.batches(PP, batch_size=7)])
    reader = SetReader(cset, input_name="input", input_dtype="float32", pp=PP, batch_size=16)
    batches = [item["input"] for item in reader]
    assert [len(b) for b in batches] == [16, 16, 8] and len(reader) == 3
    np.testing.assert_array_equal(np.concatenate(batches), normalize(expected, PP))
    # ModelOpt peeks at the first batch and rewinds; quantize_static reads one strided range per call.
    np.testing.assert_array_equal(reader.get_first()["input"], batches[0])
    reader.set_range(2, 3)
    np.testing.assert_array_equal(reader.get_next()["input"], batches[2])
    assert reader.get_next() is None
    reader.rewind()
    assert sum(1 for _ in reader) == 3
    uint8 = SetReader(cset, input_name="x", input_dtype="uint8", pp=PP, batch_size=40).get_first()["x"]
    np.testing.assert_array_equal(uint8, expected)


def test_digest_follows_the_data_and_the_preprocessing(tmp_path):
    a = spool_calibration(open_source("digits", split="train", count=32), PP, folder(tmp_path, "a"))
    b = spool_calibration(open_source("digits", split="train", count=32), PP, tmp_path)
    other_images = spool_calibration(open_source("digits", split="train", count=32, seed=1), PP, tmp_path)
    other_size = spool_calibration(open_source("digits", split="train", count=32), Preprocess(resize=40, crop=40), tmp_path)
    assert a.sha256 == b.sha256
    assert len({a.sha256, other_images.sha256, other_size.sha256}) == 3


def test_png_folder_decodes_exactly_like_the_arrays(calib_png, tmp_path):
    """Grayscale, RGB, RGBA and 16-bit PNG files of the digits give the very tensors the arrays give."""
    from_files = spool_calibration(open_source(calib_png, split="train", count=128), PP, folder(tmp_path, "f"))
    from_arrays = spool_calibration(open_source("digits", split="train", count=128), PP, tmp_path)
    assert from_files.count == from_arrays.count == 128
    assert from_files.sha256 == from_arrays.sha256


def test_non_images_and_corrupt_files_are_skipped_and_counted(tmp_path, png_writer):
    images, _ = digits_split("train")
    for i in range(20):
        png_writer(images[i], tmp_path / f"{i:02d}.png", "L")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.warns(UserWarning, match="broken.png"):
        cset = spool_calibration(open_source(tmp_path, split="train"), PP, folder(tmp_path, "work"))
    assert cset.count == 20
    assert cset.skipped == 2  # the text file at listing, the corrupt PNG while decoding


def test_too_few_usable_images_is_refused(tmp_path, png_writer):
    images, _ = digits_split("train")
    for i in range(MIN_CALIBRATION_IMAGES - 1):
        png_writer(images[i], tmp_path / f"{i:02d}.png", "RGB")
    with pytest.raises(UsageError, match=f"{MIN_CALIBRATION_IMAGES - 1} usable calibration images.*at least {MIN_CALIBRATION_IMAGES}"):
        spool_calibration(open_source(tmp_path, split="train"), PP, folder(tmp_path, "work"))


def test_only_corrupt_files_is_refused_with_the_count(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(20):
        (data / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.warns(UserWarning):
        with pytest.raises(UsageError, match=r"0 usable calibration images \(20 skipped"):
            spool_calibration(open_source(data, split="train"), PP, tmp_path)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no image files"):
        open_source(tmp_path, split="train")


def test_batch_shrinks_with_image_size():
    assert calibration_batch_size(32) == 32
    assert calibration_batch_size(224) == 4
    assert calibration_batch_size(1024) == 1


def test_copying_a_folder_keeps_its_digest(calib_png, tmp_path):
    """The digest is over content, not where the files live: a moved folder hits the same cache entries."""
    moved = tmp_path / "moved"
    shutil.copytree(calib_png, moved)
    a = spool_calibration(open_source(moved, split="train", count=16), PP, tmp_path)
    b = spool_calibration(open_source(calib_png, split="train", count=16), PP, folder(tmp_path, "b"))
    assert a.sha256 == b.sha256


def test_digest_of_a_prefix_matches_a_smaller_set(tmp_path):
    """A tool that uses only the first samples records the digest those samples would have on their own."""
    from resnet_deploy.data import ArraySource

    x, y = digits_split("train")
    big = spool_calibration(ArraySource(x[:100], y[:100], description="100"), PP, folder(tmp_path, "big"))
    head = spool_calibration(ArraySource(x[:20], y[:20], description="20"), PP, folder(tmp_path, "head"))
    assert big.digest(big.count) == big.sha256 != head.sha256
    assert big.digest(20) == head.sha256
    assert big.summary("autocast ranges", limit=20) == {"source": "100 (100 samples)", "count": 20,
                                                        "method": "autocast ranges", "sha256": head.sha256, "skipped": 0}
