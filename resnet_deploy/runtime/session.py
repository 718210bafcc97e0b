"""The Session interface shared by every backend, and ``topk_labels``.

The backends subclass ``Session``; this module imports none of them (``open_session``, in
``backends.py``, picks one).

A Session validates each batch against the artifact's input (dtype, rank, size, batch range,
NaN/Inf) before the backend sees it, so every backend fails the same way on bad input: one line
(``UsageError``) that states the shape the model takes. Validation is O(1) per call except the
finiteness check, one min and one max over a float batch (no temporary array; NaN propagates
through both, so the check is exact): about 0.1 ms at batch 8 x 3 x 224 x 224.

Thread safety, per backend (``Session.thread_safe`` says it in code):

* ``check_input``, ``prepare`` and ``topk_labels`` keep no state: safe from any thread.
* ``OnnxRuntimeSession.run``/``classify``: safe to call from several threads at once.
  ``onnxruntime.InferenceSession.run`` is thread-safe, and the I/O bindings with their
  pre-allocated outputs are kept per thread. Concurrent calls share the session's intra-op
  thread pool: on a CPU whose cores that pool already fills, expect no extra throughput.
* ``TensorRTSession``: not safe. One execution context, CUDA stream and set of pinned buffers
  per session; open one Session per thread (each holds its own context).
* ``close()`` on every backend is idempotent and must not race with a ``run`` in flight.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import Manifest, SizeRange

if TYPE_CHECKING:
    from PIL import Image as PILImage

    #: a file path, a PIL image, or a uint8 HWC RGB array (a camera frame)
    ImageLike = Union[str, os.PathLike[str], PILImage.Image, np.ndarray]

_DTYPES = {"float32": np.dtype(np.float32), "uint8": np.dtype(np.uint8), "float16": np.dtype(np.float16)}
#: batch size ``classify`` uses when the model sets no maximum
CLASSIFY_CHUNK = 64


class Session(ABC):
    """Run a classifier artifact: ``with open_session(p) as s: logits = s.run(batch)``."""

    backend: str = "?"
    #: the artifact's manifest; None for a bare artifact without one
    manifest: Manifest | None = None
    input_name: str = "input"
    input_dtype: str = "float32"
    #: per-sample shape, e.g. (3, 224, 224) or (224, 224, 3); None entries are dynamic
    sample_shape: tuple[int | None, ...] = ()
    min_batch: int = 1
    max_batch: int | None = None
    #: whether ``run``/``classify`` may be called from several threads at once on one session
    thread_safe: bool = False
    #: the graph's outputs, in order; ``run`` returns the first, ``run_outputs`` all of them
    output_names: tuple[str, ...] = ("logits",)
    #: height/width bounds of a dynamic-size input (segment, backbone manifests); None: fixed or unchecked
    size_range: SizeRange | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - backends without resources need nothing
        """Release the backend's resources; idempotent."""

    @property
    def description(self) -> str:
        return self.backend

    # ------------------------------------------------------------------ arrays in, logits out

    def expected_input(self) -> str:
        """What ``run`` takes, in words: ``float32 array of shape (N, 3, 224, 224) with N in 1..64``."""
        dims = ", ".join("?" if d is None else str(d) for d in self.sample_shape)
        top = "" if self.max_batch is None else str(self.max_batch)
        return f"{self.input_dtype} array of shape (N, {dims}) with N in {self.min_batch}..{top}"

    @property
    def hw_axes(self) -> tuple[int, int]:
        """The axes of height and width in a batch: (1, 2) for uint8 NHWC input, (2, 3) for float NCHW."""
        return (1, 2) if self.input_dtype == "uint8" else (2, 3)

    def check_input(self, batch: np.ndarray) -> np.ndarray:
        """Validate ``batch`` (dtype, rank, size, batch range, NaN/Inf); return it C-contiguous.

        Raises UsageError, one line stating the expected shape. Cost: O(1) plus one min and one
        max over a float batch.
        """
        if not isinstance(batch, np.ndarray):
            raise UsageError(f"input is a {type(batch).__name__}; this model takes a {self.expected_input()}")
        if batch.dtype != _DTYPES[self.input_dtype]:
            raise UsageError(f"input dtype is {batch.dtype}; this model takes a {self.expected_input()}")
        shape = batch.shape
        sample = self.sample_shape
        if len(shape) != len(sample) + 1 or any(w is not None and g != w for g, w in zip(shape[1:], sample)):
            raise UsageError(f"input has shape {shape}; this model takes a {self.expected_input()}")
        if self.size_range is not None:
            h, w = (shape[a] for a in self.hw_axes)
            if (problem := self.size_range.check(h, w)) is not None:
                raise UsageError(f"input {problem}; it takes a {self.expected_input()}")
        n = shape[0]
        if n < self.min_batch or (self.max_batch is not None and n > self.max_batch):
            top = "" if self.max_batch is None else self.max_batch
            raise UsageError(f"batch {n} is outside this model's range {self.min_batch}..{top}; "
                             f"it takes a {self.expected_input()}")
        # min and max propagate NaN and reach any +-Inf: exact, one pass each, no temporary array
        # (np.isfinite(batch).all() allocates a bool batch; a sum can overflow on finite data).
        if batch.dtype.kind == "f" and batch.size and not (np.isfinite(batch.min()) and np.isfinite(batch.max())):
            bad = ~np.isfinite(batch)  # the error path only: say where
            first = int(np.argwhere(bad.reshape(n, -1).any(axis=1))[0, 0])
            count = int(bad.sum())
            raise UsageError(f"input contains NaN or Inf ({count} value{'s' if count > 1 else ''}, first in sample "
                             f"{first}); this model takes a finite {self.expected_input()}")
        return batch if batch.flags.c_contiguous else np.ascontiguousarray(batch)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32, shape (N, num_classes)) for one validated batch."""
        return self._run(self.check_input(batch))

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Backend inference on an already validated, contiguous batch; returns a new array each call."""

    def run_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph by name, for one validated batch."""
        return self._run_outputs(self.check_input(batch))

    def _run_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Backends with several outputs override this; one output is ``_run``'s."""
        return {self.output_names[0]: self._run(batch)}

    # ------------------------------------------------------------------ tasks

    @property
    def task(self) -> str:
        """What the artifact computes (``archs.TASKS``); a bare artifact without a manifest counts as a classifier."""
        return "classify" if self.manifest is None else self.manifest.task

    def _require_task(self, task: str, call: str) -> None:
        if self.task != task:
            use = {"classify": "classify()", "segment": "segment()", "backbone": "features()"}[self.task]
            raise UsageError(f"{call}() needs a {task} artifact; this one is a {self.task} model: use {use}")

    def features(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """A backbone's named stage outputs (``c2``..``c5``, those exported) for a prepared batch."""
        self._require_task("backbone", "features")
        return self.run_outputs(batch)

    def segment(self, images: ImageLike | Iterable[ImageLike]) -> list[np.ndarray]:
        """Per-image class maps (int32, H x W at each image's own size) of a segmentation artifact.

        Each image is resized as the manifest says (short side ``preprocess.resize``, uncropped),
        run, and its scores resized back bilinearly to the image's size before the argmax.
        """
        from PIL import Image

        self._require_task("segment", "segment")
        maps = []
        for img in self._images(images, what="segment"):
            scores = self.run(self._dense_input(img))[0]
            w, h = img.size
            up = np.stack([np.asarray(Image.fromarray(c.astype(np.float32), "F").resize((w, h), Image.BILINEAR))
                           for c in scores])
            maps.append(up.argmax(axis=0).astype(np.int32))
        return maps

    def prepare_dense(self, image: ImageLike) -> np.ndarray:
        """The batch of one that a segmentation or backbone artifact takes for ``image``, per the manifest."""
        (img,) = list(self._images([image], what="prepare_dense"))
        return self._dense_input(img)

    def _dense_input(self, img: PILImage.Image) -> np.ndarray:
        from resnet_deploy.data import resize_short

        assert self.manifest is not None
        pp = self.manifest.preprocess
        return self._feed(resize_short(img, pp.resize)[None])

    def _feed(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 NHWC ``images`` as this artifact's input: as they are, or normalised."""
        from resnet_deploy.data import normalize

        if self.input_dtype == "uint8":
            return images
        assert self.manifest is not None
        return normalize(images, self.manifest.preprocess).astype(_DTYPES[self.input_dtype], copy=False)

    # ------------------------------------------------------------------ images in, labels out

    def classify(self, images: ImageLike | Iterable[ImageLike], *, topk: int = 5) -> list[list[tuple[str, float]]]:
        """Decode and preprocess ``images`` as the manifest says; the top-k (label, probability) of each.

        ``images``: file paths, PIL images or uint8 HWC RGB arrays (camera frames; OpenCV's BGR
        needs ``frame[..., ::-1]``), or one of them. Labels are the manifest's, else class indices.
        """
        if topk < 1:
            raise UsageError(f"topk must be at least 1, got {topk}")
        self._require_task("classify", "classify")
        return topk_labels(self.image_logits(images), topk=topk, labels=self.labels)

    def image_logits(self, images: ImageLike | Iterable[ImageLike]) -> np.ndarray:
        """Logits (N, num_classes) of ``images``, preprocessed as the manifest says.

        What ``classify`` runs: images are decoded and run in chunks of at most ``max_batch``
        (64 where unbounded), so memory stays bounded however many paths are given.
        """
        items = _as_list(images)
        if not items:
            raise UsageError("classify needs at least one image")
        chunk = self.max_batch or CLASSIFY_CHUNK
        outs = [self.run(self.prepare(items[i : i + chunk])) for i in range(0, len(items), chunk)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def prepare(self, images: ImageLike | Iterable[ImageLike]) -> np.ndarray:
        """The batch ``classify`` feeds: each image decoded, resized, cropped (and normalised) per the manifest."""
        from resnet_deploy.data import resize_crop

        self._require_task("classify", "prepare")
        decoded = self._images(images, what="classify")  # checks the manifest first
        pp = self.manifest.preprocess  # type: ignore[union-attr]
        return self._feed(np.stack([resize_crop(img, pp) for img in decoded]))

    def _images(self, images: ImageLike | Iterable[ImageLike], *, what: str) -> Iterator[PILImage.Image]:
        """``images`` decoded to RGB one at a time (memory: one full-size image), after checking the
        manifest says how to feed them; the checks run at the call, not at the first image."""
        m = self.manifest
        if m is None:
            raise UsageError(f"{what} needs the artifact's manifest (its preprocessing); use run() with prepared arrays")
        layout = {"uint8": "NHWC", "float32": "NCHW", "float16": "NCHW"}.get(self.input_dtype)
        if m.input.layout != layout or m.input.color != "RGB":
            raise UsageError(f"{what} supports {self.input_dtype} {layout} RGB input; "
                             f"the manifest says {m.input.layout} {m.input.color}")
        items = _as_list(images)
        if not items:
            raise UsageError(f"{what} needs at least one image")
        return (_decode(item) for item in items)

    @property
    def labels(self) -> list[str] | None:
        return None if self.manifest is None else self.manifest.labels


def _decode(item: Any) -> PILImage.Image:
    """A path, PIL image or uint8 HWC RGB array as an RGB PIL image."""
    from PIL import Image

    from resnet_deploy.data import load_image, to_rgb8

    if isinstance(item, Image.Image):
        return to_rgb8(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3:
            raise UsageError(f"image arrays must be uint8 HWC RGB (H, W, 3), got {item.dtype} {item.shape}")
        return Image.fromarray(np.ascontiguousarray(item), "RGB")
    return load_image(item)


def _as_list(images: Any) -> list:
    """One image or many -> a list; a 4-D uint8 array is a batch of frames."""
    from PIL import Image

    if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim == 3):
        return [images]
    return list(images)


def topk_labels(logits: np.ndarray, *, topk: int, labels: Sequence[str] | None) -> list[list[tuple[str, float]]]:
    """Softmax the logits and name the ``topk`` classes of each row (class index where unlabelled)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    k = min(topk, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    name = (lambda i: labels[i]) if labels else str
    return [[(name(int(i)), float(row[i])) for i in idx] for row, idx in zip(probs, order)]
