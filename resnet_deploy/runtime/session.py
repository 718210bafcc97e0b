"""The Session interface shared by every backend, and ``open_session``.

A Session validates each batch against the artifact's input (dtype, rank, size, batch range,
NaN/Inf) before the backend sees it, so every backend fails the same way on bad input.

Thread safety: a Session is not safe to call from several threads at once (TensorRT execution
contexts and pinned buffers are per session); open one Session per thread. ``close()`` is
idempotent.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import Manifest, read_manifest

if TYPE_CHECKING:
    from PIL import Image as PILImage

_DTYPES = {"float32": np.float32, "uint8": np.uint8, "float16": np.float16}


class Session(ABC):
    """Run a classifier artifact: ``with open_session(p) as s: logits = s.run(batch)``."""

    backend: str = "?"
    #: the artifact's manifest; None for a bare artifact without a sidecar
    manifest: Manifest | None = None
    input_name: str = "input"
    input_dtype: str = "float32"
    #: per-sample shape, e.g. (3, 224, 224) or (224, 224, 3); None entries are dynamic
    sample_shape: tuple[int | None, ...] = ()
    min_batch: int = 1
    max_batch: int | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - backends without resources need nothing
        """Release the backend's resources; idempotent."""

    @property
    def description(self) -> str:
        return self.backend

    def check_input(self, batch: np.ndarray) -> np.ndarray:
        """Validate ``batch`` (dtype, rank, size, batch range, NaN/Inf); return it C-contiguous."""
        if not isinstance(batch, np.ndarray):
            raise UsageError(f"input must be a numpy array, got {type(batch).__name__}")
        expected = f"({'N, ' + ', '.join('?' if d is None else str(d) for d in self.sample_shape)})"
        if batch.dtype != _DTYPES[self.input_dtype]:
            raise UsageError(f"input dtype is {batch.dtype}, this model takes {self.input_dtype} of shape {expected}")
        if batch.ndim != len(self.sample_shape) + 1:
            raise UsageError(f"input has shape {batch.shape}, this model takes {self.input_dtype} of shape {expected}")
        for got, want in zip(batch.shape[1:], self.sample_shape):
            if want is not None and got != want:
                raise UsageError(f"input has shape {batch.shape}, this model takes {self.input_dtype} of shape {expected}")
        n = batch.shape[0]
        if n < self.min_batch or (self.max_batch is not None and n > self.max_batch):
            raise UsageError(f"batch {n} is outside this model's range {self.min_batch}..{self.max_batch}")
        if batch.dtype.kind == "f" and not np.isfinite(batch).all():
            raise UsageError("input contains NaN or Inf")
        return np.ascontiguousarray(batch)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32, shape (N, num_classes)) for one validated batch."""
        return self._run(self.check_input(batch))

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Backend inference on an already validated, contiguous batch."""

    # ------------------------------------------------------------------ images in, labels out

    def classify(self, images: Sequence[str | os.PathLike[str] | PILImage.Image | np.ndarray], *,
                 topk: int = 5) -> list[list[tuple[str, float]]]:
        """Decode and preprocess ``images`` as the manifest says; return the top-k (label, probability) each.

        Images are file paths, PIL images, or uint8 HWC RGB arrays (camera frames).
        """
        logits = self.run(self.prepare(images))
        return topk_labels(logits, topk=topk, labels=self.labels)

    def prepare(self, images: Sequence[str | os.PathLike[str] | PILImage.Image | np.ndarray]) -> np.ndarray:
        """The batch ``classify`` feeds: manifest preprocessing applied to each image."""
        from PIL import Image

        from resnet_deploy.data import load_image, normalize, resize_crop, to_rgb8

        if self.manifest is None:
            raise UsageError("classify needs the artifact's manifest (its preprocessing); use run() with prepared arrays")
        if not len(images):
            raise UsageError("classify needs at least one image")
        pp = self.manifest.preprocess
        cropped = []
        for item in images:
            if isinstance(item, Image.Image):
                img = to_rgb8(item)
            elif isinstance(item, np.ndarray):
                if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3:
                    raise UsageError(f"image arrays must be uint8 HWC RGB, got {item.dtype} {item.shape}")
                img = Image.fromarray(item, "RGB")
            else:
                img = load_image(item)
            cropped.append(resize_crop(img, pp))
        batch = np.stack(cropped)
        return batch if self.input_dtype == "uint8" else normalize(batch, pp)

    @property
    def labels(self) -> list[str] | None:
        return None if self.manifest is None else self.manifest.labels


def topk_labels(logits: np.ndarray, *, topk: int, labels: list[str] | None) -> list[list[tuple[str, float]]]:
    """Softmax the logits and name the ``topk`` classes of each row (class index where unlabelled)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    k = min(topk, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    name = (lambda i: labels[i]) if labels else str
    return [[(name(int(i)), float(row[i])) for i in idx] for row, idx in zip(probs, order)]


def open_session(path: str | os.PathLike[str], *, backend: str | None = None, **options: Any) -> Session:
    """Open ``path`` with the backend its suffix names (``.onnx``: onnxruntime; ``.plan``/``.engine``: tensorrt).

    ``options`` go to the backend: onnxruntime takes ``provider`` ("cpu" | "cuda" | "tensorrt") and
    ``threads``; tensorrt takes ``cuda_graph``. The sidecar manifest is read when present.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if backend is None:
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            backend = "onnxruntime"
        elif suffix in (".plan", ".engine", ".trt"):
            backend = "tensorrt"
        else:
            raise UsageError(f"{path}: cannot tell the backend from the suffix (use .onnx, .plan or .engine)")
    manifest = read_manifest(path)
    if backend == "onnxruntime":
        from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

        return OnnxRuntimeSession(path, manifest=manifest, **options)
    if backend == "tensorrt":
        from resnet_deploy.runtime.tensorrt import TensorRTSession

        return TensorRTSession(path, manifest=manifest, **options)
    raise UsageError(f"unknown backend {backend!r} (onnxruntime or tensorrt)")
