"""Calibration data: a DataSource spooled once to disk, and the reader protocol the quantizers consume.

A calibration set is read several times (ModelOpt peeks at the first batch, the calibrator reads
everything, the accuracy fallback reads a few samples again), and its exact size must be known
before calibration starts. So the chosen samples are decoded and preprocessed once, streamed
into one raw file in the work folder (uint8 NHWC images, or float32 NCHW tensors for sources
that hold normalised arrays) and read back one batch at a time: memory stays bounded by a batch,
whatever the set's size. The sha256 of the set is taken over exactly those bytes, i.e. over what
the model sees after resize and crop, so it changes when the data or the preprocessing does.

Segmentation and backbone models take whole images at their own aspect (short side ``resize``,
no crop: ``preprocess.crop`` 0), but a calibration batch is one array, so its samples need one
size. They are cut as a classifier's are with the crop set to ``resize``: the short side resized
to ``resize``, then the center square of that side (``calibration_preprocess``). Activation
statistics are per tensor or per channel, so a square view of the same images at the deployed
scale gives the ranges the whole images would; the border strips of the long side are left out.
``resize`` is within the graph's ``size`` bounds by construction (``export.onnx.dense_size_range``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.data import MIN_CALIBRATION_IMAGES, normalize
from resnet_deploy.errors import UsageError

if TYPE_CHECKING:
    from resnet_deploy.data import DataSource
    from resnet_deploy.manifest import Manifest, Preprocess

# Activations of a ResNet-50 calibration batch of 4 at 224x224 take about 1 GiB in the calibrator's
# graph (every tensor is an output there; measured: 512 images at batch 4 peak at 1.6 GiB RSS with
# onnxruntime MinMax). The batch shrinks with the image area so that bound holds at any size.
BATCH_PIXELS = 4 * 224 * 224
MAX_BATCH = 32


def calibration_preprocess(pp: Preprocess) -> Preprocess:
    """How calibration samples are cut: ``pp`` itself for a crop; uncropped (dense) models the center square at ``resize``."""
    return pp if pp.crop else dataclasses.replace(pp, crop=pp.resize)


def calibration_batch_size(image_size: int) -> int:
    """Samples per calibration batch for ``image_size`` x ``image_size`` inputs (1..32)."""
    return max(1, min(MAX_BATCH, BATCH_PIXELS // (image_size * image_size)))


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration samples in one raw file (``path``), read back batch by batch."""

    path: Path
    dtype: str  # "uint8": NHWC images after resize/crop; "float32": normalised NCHW tensors
    sample_shape: tuple[int, ...]
    count: int
    skipped: int  # non-images at listing plus undecodable files while streaming
    sha256: str  # over dtype, shape and the bytes of every sample, in order
    description: str  # the source, e.g. "digits:train (512 samples)"

    @property
    def side(self) -> int:
        """The side of the square samples, pixels."""
        return self.sample_shape[0] if self.dtype == "uint8" else self.sample_shape[1]

    def summary(self, method: str, *, limit: int | None = None) -> dict:
        """The manifest's ``source.calibration`` entry (for the first ``limit`` samples when a tool used only those)."""
        count = self.count if limit is None else min(limit, self.count)
        return {"source": self.description, "count": count, "method": method, "sha256": self.digest(count),
                "skipped": self.skipped}

    def digest(self, count: int) -> str:
        """sha256 of the first ``count`` samples, as ``sha256`` is of all of them."""
        if count == self.count:
            return self.sha256
        h = hashlib.sha256(f"{self.dtype}|{self.sample_shape}|".encode())
        for start in range(0, count, 256):
            h.update(memoryview(np.ascontiguousarray(self.read(start, min(256, count - start)))).cast("B"))
        return h.hexdigest()

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples ``start .. start+count`` (clipped to the set), read at an offset: never the whole file."""
        count = max(0, min(count, self.count - start))
        per_sample = int(np.prod(self.sample_shape))
        with open(self.path, "rb") as f:
            f.seek(start * per_sample * np.dtype(self.dtype).itemsize)
            data = np.fromfile(f, dtype=self.dtype, count=count * per_sample)
        return data.reshape(count, *self.sample_shape)

    def as_input(self, arr: np.ndarray, input_dtype: str, pp: Preprocess) -> np.ndarray:
        """Stored samples as a model with ``input_dtype`` ("float32" or "uint8") takes them."""
        if input_dtype == "uint8":
            if self.dtype != "uint8":
                raise UsageError(f"{self.description}: holds normalised float tensors; a uint8-input model needs images")
            return arr
        return normalize(arr, pp) if self.dtype == "uint8" else arr

    def inputs(self, input_dtype: str, pp: Preprocess, *, batch_size: int,
               limit: int | None = None) -> Iterator[np.ndarray]:
        """The first ``limit`` samples (all by default) as model inputs, ``batch_size`` at a time."""
        n = self.count if limit is None else min(limit, self.count)
        for start in range(0, n, batch_size):
            yield self.as_input(self.read(start, min(batch_size, n - start)), input_dtype, pp)

    def reader(self, manifest: Manifest, *, batch_size: int) -> SetReader:
        return SetReader(self, input_name=manifest.input.name, input_dtype=manifest.input.dtype,
                         pp=manifest.preprocess, batch_size=batch_size)


def spool_calibration(source: DataSource, pp: Preprocess, folder: Path, *,
                      minimum: int = MIN_CALIBRATION_IMAGES) -> CalibrationSet:
    """Decode and preprocess ``source`` once into ``folder/calibration.raw``; refuse fewer than ``minimum`` samples.

    ``pp``: the model's preprocessing; an uncropped one calibrates on center squares (``calibration_preprocess``).
    """
    pp = calibration_preprocess(pp)
    path = folder / "calibration.raw"
    h = hashlib.sha256()
    count, dtype, shape = 0, None, None
    with open(path, "wb") as f:
        for batch in source.batches(pp, batch_size=32):
            arr = batch.images if batch.images is not None else batch.tensor
            if dtype is None:
                dtype, shape = str(arr.dtype), tuple(arr.shape[1:])
                h.update(f"{dtype}|{shape}|".encode())
            arr = np.ascontiguousarray(arr)
            h.update(memoryview(arr).cast("B"))
            f.write(memoryview(arr).cast("B"))
            count += len(arr)
    skipped = source.skipped
    if count < minimum:
        raise UsageError(
            f"{source.description}: {count} usable calibration images ({skipped} skipped as non-images or "
            f"undecodable); at least {minimum} are needed"
        )
    return CalibrationSet(path=path, dtype=dtype, sample_shape=shape, count=count, skipped=skipped,
                          sha256=h.hexdigest(), description=source.description)


class SetReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over a CalibrationSet, plus ModelOpt's extras.

    ``get_next`` streams batches; ``__len__``/``set_range`` let ``quantize_static`` collect one batch
    per call (its ``CalibStridedMinMax`` option, which keeps every calibrator's memory to one
    batch); ``get_first``/``rewind`` are what ModelOpt's readers offer and its graph checks call.
    """

    def __init__(self, cset: CalibrationSet, *, input_name: str, input_dtype: str, pp: Preprocess,
                 batch_size: int) -> None:
        self.cset = cset
        self.input_name = input_name
        self.input_dtype = input_dtype
        self.pp = pp
        self.batch_size = batch_size
        self.batches_read = 0
        self.rewind()

    def __len__(self) -> int:
        return (self.cset.count + self.batch_size - 1) // self.batch_size

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pos, self._end = start_index, min(end_index, len(self))

    def rewind(self) -> None:
        self.set_range(0, len(self))

    def get_first(self) -> dict[str, np.ndarray]:
        return self._batch(0)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        self._pos += 1
        self.batches_read += 1
        return self._batch(self._pos - 1)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (item := self.get_next()) is not None:
            yield item

    def _batch(self, index: int) -> dict[str, np.ndarray]:
        arr = self.cset.read(index * self.batch_size, self.batch_size)
        return {self.input_name: self.cset.as_input(arr, self.input_dtype, self.pp)}
