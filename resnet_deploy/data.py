"""Data sources and preprocessing: image folders, ``.npy``/``.npz`` arrays, the digits and digits-seg sets.

Preprocessing is torchvision's ImageClassification preset, done in two halves so that a uint8
model can take the first half only:

1. geometry: PIL bilinear resize of the short side to ``resize``, center crop to ``crop``
   -> uint8 HWC RGB (what a uint8-input graph consumes, NHWC);
2. normalisation: /255, minus mean, over std -> float32 NCHW (what a float graph consumes).

Every source streams in batches (bounded memory) and yields the cropped uint8 images; float
arrays that were normalised elsewhere pass through untouched. numpy and Pillow only: the
runtime uses this module on devices without torch.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.errors import UsageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from resnet_deploy.manifest import Preprocess

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# Decompression-bomb limit: far above any camera frame, far below what exhausts memory.
MAX_IMAGE_PIXELS = 64_000_000
MIN_CALIBRATION_IMAGES = 16
DIGITS_EVAL_FRACTION = 0.3  # held-out part of the 1,797 digits; the rest trains and calibrates
DIGITS_SEED = 0


class ImageDecodeError(UsageError):
    """One image could not be decoded; sources skip and count these."""


_NOTED: set[str] = set()  # undecodable files already noted in this process


# ----------------------------------------------------------------------------- images


def load_image(path: str | os.PathLike[str]) -> PILImage.Image:
    """Open ``path`` as 8-bit RGB; reject decompression bombs before decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ImageDecodeError(
                        f"{path}: {w}x{h} pixels exceeds the {MAX_IMAGE_PIXELS:,}-pixel limit (decompression bomb?)"
                    )
                img.load()
                return to_rgb8(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"{path}: rejected as a decompression bomb ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from exc


def to_rgb8(img: PILImage.Image) -> PILImage.Image:
    """Any PIL mode -> 8-bit RGB. 16/32-bit grayscale is rescaled, not clipped as PIL's convert does."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    # Alpha is dropped, as torchvision's ImageFolder loader (``img.convert("RGB")``) does, so a model
    # sees the tensor it was trained on; palette, CMYK, LA and 1-bit go through PIL's converters.
    return img if img.mode == "RGB" else img.convert("RGB")


def resize_crop(img: PILImage.Image, pp: Preprocess) -> np.ndarray:
    """torchvision ``Resize(resize)`` + ``CenterCrop(crop)`` on a PIL image -> uint8 HWC RGB."""
    if pp.interpolation != "bilinear":
        raise UsageError(f"interpolation {pp.interpolation!r} is not supported (bilinear only)")
    img = _resized(img, pp.resize)
    new_w, new_h = img.size
    if pp.crop > min(new_w, new_h):
        raise UsageError(f"crop {pp.crop} is larger than the resized image {new_w}x{new_h}")
    top = int(round((new_h - pp.crop) / 2.0))
    left = int(round((new_w - pp.crop) / 2.0))
    img = img.crop((left, top, left + pp.crop, top + pp.crop))
    return np.asarray(img, dtype=np.uint8)


def _resized(img: PILImage.Image, short: int) -> PILImage.Image:
    """torchvision ``Resize(short)``: PIL bilinear, the short side becomes ``short``, the long side truncated."""
    from PIL import Image

    w, h = img.size
    # torchvision _compute_resized_output_size
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    return img if (new_w, new_h) == (w, h) else img.resize((new_w, new_h), Image.BILINEAR)


def resize_short(img: PILImage.Image, short: int) -> np.ndarray:
    """The whole image, its short side resized to ``short`` (segmentation, backbones) -> uint8 HWC RGB."""
    return np.asarray(_resized(img, short), dtype=np.uint8)


def normalize(images: np.ndarray, pp: Preprocess) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW: /255, minus mean, over std (torchvision's op order)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UsageError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    x = images.astype(np.float32)
    x /= np.float32(255.0)  # in place: one float copy of the batch, then the NCHW copy
    x -= np.asarray(pp.mean, dtype=np.float32)
    x /= np.asarray(pp.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ----------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """Images as a model input: ``images`` uint8 NHWC (after resize/crop) or ``tensor`` float32 NCHW."""

    images: np.ndarray | None
    tensor: np.ndarray | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.images if self.images is not None else self.tensor)

    def as_input(self, input_dtype: str, pp: Preprocess) -> np.ndarray:
        """The array a model with ``input_dtype`` ("float32" or "uint8") consumes."""
        if input_dtype == "uint8":
            if self.images is None:
                raise UsageError("this data holds normalised float tensors; a uint8-input model needs images")
            return self.images
        if self.tensor is not None:
            return self.tensor
        return normalize(self.images, pp)


# ----------------------------------------------------------------------------- classes


def class_indices(names: Sequence[str], *, labels: Sequence[str] | None, num_classes: int | None,
                  origin: str) -> list[int]:
    """The model's class index of each data class name: the one mapping every labelled source uses.

    By the model's ``labels`` where it has them, else a numeric name is the class index (``3/`` is
    class 3). Never by position: a folder holding only ``3/`` and ``7/`` scores them as 3 and 7.
    A name the model does not know is refused.
    """
    if labels:
        index = {name: i for i, name in enumerate(labels)}
        unknown = [n for n in names if n not in index]
        if unknown:
            known = ", ".join(list(labels)[:5]) + (", ..." if len(labels) > 5 else "")
            raise UsageError(f"{origin}: class {unknown[0]!r} is not one of the model's {len(labels)} classes "
                             f"({known})")
        return [index[n] for n in names]
    out = []
    for name in names:
        if not name.isdigit() or (num_classes is not None and int(name) >= num_classes):
            size = "" if num_classes is None else f" 0..{num_classes - 1}"
            raise UsageError(f"{origin}: class {name!r} is not a class index{size} and the model has no labels "
                             "to match it by name")
        out.append(int(name))
    return out


# ----------------------------------------------------------------------------- sources


class DataSource:
    """A finite, ordered set of samples that streams in batches. Subclasses fill ``_items``."""

    description: str
    class_names: list[str] | None = None

    def for_model(self, model: object | None) -> DataSource:
        """This source with its labels as ``model``'s class indices (``model``: anything with
        ``num_classes`` and ``labels``, a manifest or a loaded model); refuses a class it does not know.

        Unbound, numeric class names are the class indices and other names give no labels. Where
        ``model`` says its ``task``, only what scores it is bound: a classifier's image labels, a
        segmenter's masks; image labels mean nothing to segmentation and backbone models (a digit's
        class is not a pixel class), so there they are left unbound and unchecked.
        """
        task = getattr(model, "task", "classify")
        if model is not None and (task == "classify" or (task == "segment" and self.has_masks)):
            self._bind(getattr(model, "labels", None), getattr(model, "num_classes", None))
        return self

    def _bind(self, labels: Sequence[str] | None, num_classes: int | None) -> None:
        return None

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def skipped(self) -> int:
        """Samples skipped so far (non-images at listing, undecodable files while streaming)."""
        return 0

    def digest(self) -> str:
        """sha256 identifying exactly the chosen samples (content, not names)."""
        raise NotImplementedError

    def batches(self, pp: Preprocess, *, batch_size: int) -> Iterator[Batch]:
        raise NotImplementedError

    def frames(self) -> Iterator[tuple[np.ndarray, int]]:
        """Each sample before any preprocessing: uint8 HWC RGB at its own size, and its label (-1: none).

        For deployment targets that resize frames their own way (DeepStream's nvinfer); a source
        of already normalised tensors has no frames.
        """
        raise UsageError(f"{self.description}: holds normalised tensors, not images")

    #: whether ``masked_frames`` gives label maps (segmentation data)
    has_masks: bool = False

    def masked_frames(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Each sample as ``frames`` gives it, with its label map where the source has masks.

        The map is uint8 H x W at the frame's size: the class index of each pixel, 255 where it is
        ignored (Pascal VOC's convention); None for sources without masks.
        """
        for frame, _label in self.frames():
            yield frame, None


def _decode_noted(path: Path, bad: set[Path]) -> PILImage.Image | None:
    """``path`` as RGB, or None for an undecodable file, added to ``bad`` (noted the first time only)."""
    if path in bad:
        return None
    try:
        return load_image(path)
    except ImageDecodeError as exc:
        bad.add(path)
        if str(exc) not in _NOTED:  # once per process, however many sources and passes read the file
            _NOTED.add(str(exc))
            warnings.warn(str(exc), stacklevel=4)
        return None


def _choose(n: int, count: int | None, seed: int) -> np.ndarray:
    """Indices of a deterministic subset: all of them, or ``count`` drawn with ``seed``, sorted."""
    if count is None or count >= n:
        return np.arange(n)
    if count < 1:
        raise UsageError(f"count must be at least 1, got {count}")
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))


class ImageFolderSource(DataSource):
    """A folder of images. Class sub-folders give labels (sorted names, like ImageFolder); a flat folder is unlabelled."""

    def __init__(self, root: Path, *, count: int | None = None, seed: int = 0) -> None:
        if not root.is_dir():
            raise UsageError(f"{root}: not a folder")
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files: list[tuple[Path, int | None]] = []
        self._skipped = 0
        if subdirs:
            self.class_names = [d.name for d in subdirs]
            for idx, d in enumerate(subdirs):  # idx: the folder's position in class_names, mapped by _index
                files += [(p, idx) for p in self._list(d)]
        else:
            files = [(p, None) for p in self._list(root)]
        self._index: list[int] | None = None
        if self.class_names is not None and all(n.isdigit() for n in self.class_names):
            self._index = class_indices(self.class_names, labels=None, num_classes=None, origin=str(root))
        if not files:
            raise UsageError(f"{root}: no image files found ({self._skipped} other files skipped)")
        chosen = _choose(len(files), count, seed)
        self._files = [files[i] for i in chosen]
        self._bad: set[Path] = set()  # chosen files that did not decode (each noted once)
        self.root = root

    @property
    def description(self) -> str:  # type: ignore[override]
        """The folder and the images it gives (those found undecodable so far not counted)."""
        return f"{self.root} ({len(self._files) - len(self._bad)} images)"

    def _list(self, folder: Path) -> list[Path]:
        out = []
        for p in sorted(folder.rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out.append(p)
            else:
                self._skipped += 1
        return out

    def _bind(self, labels: Sequence[str] | None, num_classes: int | None) -> None:
        if self.class_names is not None:
            self._index = class_indices(self.class_names, labels=labels, num_classes=num_classes, origin=str(self.root))

    def _label(self, folder: int | None) -> int:
        return -1 if folder is None or self._index is None else self._index[folder]

    def __len__(self) -> int:
        return len(self._files)

    @property
    def skipped(self) -> int:
        return self._skipped + len(self._bad)

    def _decode(self, path: Path) -> PILImage.Image | None:
        return _decode_noted(path, self._bad)

    def digest(self) -> str:
        h = hashlib.sha256()
        for path, label in self._files:
            h.update(f"{path.relative_to(self.root).as_posix()}\0{self._label(label)}\0".encode())
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        return h.hexdigest()

    def batches(self, pp: Preprocess, *, batch_size: int) -> Iterator[Batch]:
        images: list[np.ndarray] = []
        labels: list[int] = []
        for path, label in self._files:
            if (img := self._decode(path)) is None:
                continue
            images.append(resize_crop(img, pp))
            labels.append(self._label(label))
            if len(images) == batch_size:
                yield self._batch(images, labels)
                images, labels = [], []
        if images:
            yield self._batch(images, labels)

    def frames(self) -> Iterator[tuple[np.ndarray, int]]:
        for path, label in self._files:
            if (img := self._decode(path)) is None:
                continue
            yield np.asarray(img, dtype=np.uint8), self._label(label)

    def _batch(self, images: list[np.ndarray], labels: list[int]) -> Batch:
        return Batch(np.stack(images), None, None if self._index is None else np.asarray(labels, dtype=np.int64))


class ArraySource(DataSource):
    """In-memory arrays: uint8 images (N, H, W[, C]) resized like photos, or float32 NCHW used as-is."""

    def __init__(self, data: np.ndarray, labels: np.ndarray | None, *, description: str,
                 class_names: list[str] | None = None, count: int | None = None, seed: int = 0) -> None:
        if data.ndim not in (3, 4) or len(data) == 0:
            raise UsageError(f"{description}: expected a non-empty array (N, H, W[, C]) or (N, 3, H, W), got {data.shape}")
        if data.dtype != np.uint8 and data.dtype.kind != "f":
            raise UsageError(f"{description}: {data.dtype} data is not supported (uint8 images, or float32 "
                             "normalised NCHW tensors)")
        self._float = data.dtype != np.uint8
        if self._float:
            if data.ndim != 4 or data.shape[1] != 3:
                raise UsageError(f"{description}: float data must be normalised NCHW (N, 3, H, W), got {data.shape}")
            if not np.isfinite(data).all():
                raise UsageError(f"{description}: contains NaN or Inf")
            data = data.astype(np.float32, copy=False)
        if labels is not None and len(labels) != len(data):
            raise UsageError(f"{description}: {len(labels)} labels for {len(data)} samples")
        idx = _choose(len(data), count, seed)
        self._picked = idx  # the rows of ``data`` this source gives
        self._data = data[idx] if len(idx) != len(data) else data
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64)[idx]
        self._raw_labels = self._labels
        self.class_names = class_names
        self.description = f"{description} ({len(self._data)} samples)"

    def _bind(self, labels: Sequence[str] | None, num_classes: int | None) -> None:
        if self._labels is None:
            return
        if self.class_names is not None:  # labels index class_names (the digits): map them by name
            index = np.asarray(class_indices(self.class_names, labels=labels, num_classes=num_classes,
                                             origin=self.description), dtype=np.int64)
            self._labels = index[self._raw_labels]
        elif num_classes is not None and len(self._labels) and not 0 <= int(self._labels.min()) <= int(
                self._labels.max()) < num_classes:
            raise UsageError(f"{self.description}: labels {int(self._labels.min())}..{int(self._labels.max())} are "
                             f"not class indices of a model with {num_classes} classes")

    def __len__(self) -> int:
        return len(self._data)

    def digest(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self._data).tobytes())
        if self._labels is not None:
            h.update(self._labels.tobytes())
        return h.hexdigest()

    def batches(self, pp: Preprocess, *, batch_size: int) -> Iterator[Batch]:
        from PIL import Image

        for start in range(0, len(self._data), batch_size):
            chunk = self._data[start : start + batch_size]
            labels = None if self._labels is None else self._labels[start : start + batch_size]
            if self._float:
                if chunk.shape[2:] != (pp.crop, pp.crop):
                    raise UsageError(f"float data is {chunk.shape[2]}x{chunk.shape[3]}, the model takes {pp.crop}x{pp.crop}")
                yield Batch(None, chunk, labels)
                continue
            images = [resize_crop(to_rgb8(Image.fromarray(img)), pp) for img in chunk]
            yield Batch(np.stack(images), None, labels)


    def frames(self) -> Iterator[tuple[np.ndarray, int]]:
        if self._float:
            yield from super().frames()
            return
        from PIL import Image

        for i, img in enumerate(self._data):
            label = -1 if self._labels is None else int(self._labels[i])
            yield np.asarray(to_rgb8(Image.fromarray(np.asarray(img))), dtype=np.uint8), label


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real handwritten digits as uint8 8x8 images, fixed stratified split.

    ``split`` is "train" (the demo model's training set and the calibration set) or "eval" (held out).
    """
    from resnet_deploy.extras import require_export

    load_digits = require_export("sklearn.datasets", needed_by="the built-in digits data").load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "eval"):
        raise UsageError(f"digits split must be 'train' or 'eval', got {split!r}")
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # pixel values are 0..16
    x_train, x_eval, y_train, y_eval = train_test_split(
        images, digits.target, test_size=DIGITS_EVAL_FRACTION, random_state=DIGITS_SEED, stratify=digits.target
    )
    return (x_train, y_train) if split == "train" else (x_eval, y_eval)


# ----------------------------------------------------------------------------- segmentation data

#: label maps mark pixels that no class claims with 255 (Pascal VOC's "void"): never scored
IGNORE = 255
#: digits-seg classes: 0 is the background, digit d is class d + 1
DIGITS_SEG_LABELS = ["background", *(str(d) for d in range(10))]
DIGITS_SEG_CANVAS = 96  # canvas side in pixels
DIGITS_SEG_PER_CANVAS = 3  # digits on each canvas
DIGITS_SEG_DIGIT = 32  # each 8x8 digit upscaled bilinearly 4x, the scale the classifier demo sees
DIGITS_SEG_JITTER = 4  # each digit sits in a cell of the canvas' 3x3 grid, shifted up to this many pixels
DIGITS_SEG_STROKE = 96  # upscaled ink at or above this is the digit's stroke
DIGITS_SEG_RIM = 32  # ink below this is background; between the two it is the blur's rim: IGNORE


def digits_seg_split(split: str, *, round: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """digits-seg: the real digits of ``digits_split(split)``, three to a 96x96 canvas, with label maps.

    Returns (images N x 96 x 96 uint8, masks N x 96 x 96 uint8, digits N x 3: the indices into
    ``digits_split(split)`` on each canvas). Each digit of the split appears exactly once per
    ``round`` (1,257 train digits: 419 canvases; 540 held out: 180), in an order and at positions
    drawn from a generator seeded by (split, round): the SRC ``digits-seg`` is round 0, and the
    demo trains on further rounds (new compositions of the same train digits). Each digit is
    upscaled 8x8 -> 32x32 (PIL bilinear) and placed in its own cell of the canvas' 3x3 grid of
    32-pixel cells (three of the nine, drawn), shifted by up to ``DIGITS_SEG_JITTER`` pixels each
    way (kept on the canvas), so neighbours can overlap by a few pixels. The image is the
    brightest ink at each pixel; the mask is the class of the digit that ink belongs to (ties:
    the earlier placed) where it is >= ``DIGITS_SEG_STROKE``, background (0) where it is
    < ``DIGITS_SEG_RIM``, and ``IGNORE`` on the blurred rim between.
    """
    from PIL import Image

    x, y = digits_split(split)
    side, size, k = DIGITS_SEG_CANVAS, DIGITS_SEG_DIGIT, DIGITS_SEG_PER_CANVAS
    up = np.stack([np.asarray(Image.fromarray(img, "L").resize((size, size), Image.BILINEAR)) for img in x])
    rng = np.random.default_rng([DIGITS_SEED, ("train", "eval").index(split), round])
    groups = rng.permutation(len(x))[: len(x) // k * k].reshape(-1, k)
    images = np.zeros((len(groups), side, side), np.uint8)
    masks = np.zeros_like(images)
    layers = np.zeros((k, side, side), np.uint8)
    for n, group in enumerate(groups):
        layers[:] = 0
        cells = rng.choice((side // size) ** 2, size=k, replace=False)
        shifts = rng.integers(-DIGITS_SEG_JITTER, DIGITS_SEG_JITTER + 1, size=(k, 2))
        for j, (i, cell) in enumerate(zip(group, cells)):
            top, left = (int(np.clip(c * size + d, 0, side - size)) for c, d in zip(divmod(int(cell), side // size),
                                                                                   shifts[j]))
            layers[j, top : top + size, left : left + size] = up[i]
        ink = layers.max(axis=0)
        classes = (y[group] + 1).astype(np.uint8)[layers.argmax(axis=0)]
        images[n] = ink
        masks[n] = np.where(ink >= DIGITS_SEG_STROKE, classes, np.where(ink < DIGITS_SEG_RIM, 0, IGNORE))
    return images, masks, groups


class MaskedArraySource(ArraySource):
    """uint8 images (N, H, W[, C]) with a label map each (N, H, W): class indices, ``IGNORE`` unscored.

    ``class_names`` name the mask values; bound to a model with labels, they are mapped to its
    classes by name (as image labels are); otherwise the values are the model's class indices.
    """

    has_masks = True

    def __init__(self, data: np.ndarray, masks: np.ndarray, *, description: str,
                 class_names: list[str] | None = None, count: int | None = None, seed: int = 0) -> None:
        if data.dtype != np.uint8:
            raise UsageError(f"{description}: images with masks must be uint8, got {data.dtype}")
        if masks.dtype != np.uint8 or masks.shape != data.shape[:3]:
            raise UsageError(f"{description}: masks must be uint8 (N, H, W) matching the images {data.shape[:3]}, "
                             f"got {masks.dtype} {masks.shape}")
        super().__init__(data, None, description=description, class_names=class_names, count=count, seed=seed)
        self._masks = masks[self._picked] if len(self._picked) != len(masks) else masks
        self._lut: np.ndarray | None = None  # mask value -> the bound model's class index

    def _bind(self, labels: Sequence[str] | None, num_classes: int | None) -> None:
        if labels and self.class_names:
            lut = np.arange(256, dtype=np.uint8)
            lut[: len(self.class_names)] = class_indices(self.class_names, labels=labels, num_classes=num_classes,
                                                         origin=self.description)
            self._lut = lut

    def digest(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self._data).tobytes())
        h.update(np.ascontiguousarray(self._masks).tobytes())
        return h.hexdigest()

    def masked_frames(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for (frame, _label), mask in zip(self.frames(), self._masks):
            yield frame, (mask if self._lut is None else self._lut[mask])


def load_mask(path: Path) -> np.ndarray:
    """A PNG label map (palette or 8-bit grayscale: the class index of each pixel, 255 ignored) as uint8 H x W."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise UsageError(f"{path}: a label map must be a palette or 8-bit grayscale PNG of class indices, "
                                 f"not mode {img.mode}")
            return np.asarray(img, dtype=np.uint8)  # a palette image's values are its indices, not its colours
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the label map ({exc})") from exc


class MaskFolderSource(DataSource):
    """Images with PNG label maps of the same name in a parallel folder (Pascal VOC's layout).

    ``stems``: the names (relative paths without suffix) to take, in order; None: every image under
    ``images``, each of which must have its map. Mask values are the model's class indices, 255
    ignored. A missing map or one whose size is not its image's is refused when the source opens.
    """

    has_masks = True

    def __init__(self, images: Path, masks: Path, *, stems: list[str] | None = None, count: int | None = None,
                 seed: int = 0, description: str | None = None) -> None:
        from PIL import Image

        for folder in (images, masks):
            if not folder.is_dir():
                raise UsageError(f"{folder}: not a folder")
        found = {p.relative_to(images).with_suffix("").as_posix(): p for p in sorted(images.rglob("*"))
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}
        names = sorted(found) if stems is None else stems
        if not names:
            raise UsageError(f"{images}: no image files found")
        missing = [n for n in names if n not in found]
        if missing:
            raise UsageError(f"{images}: {len(missing)} listed images are missing (first: {missing[0]})")
        unmapped = [n for n in names if not (masks / f"{n}.png").is_file()]
        if unmapped:
            raise UsageError(f"{masks}: {len(unmapped)} of {len(names)} images have no label map "
                             f"(first: {found[unmapped[0]].name} has no {unmapped[0]}.png)")
        chosen = [names[i] for i in _choose(len(names), count, seed)]
        self._pairs = [(found[n], masks / f"{n}.png") for n in chosen]
        for image, mask in self._pairs:
            try:
                with Image.open(image) as a, Image.open(mask) as b:
                    sizes = a.size, b.size
            except (OSError, SyntaxError, ValueError):
                continue  # undecodable: skipped and counted while streaming, as in image folders
            if sizes[0] != sizes[1]:
                raise UsageError(f"{mask}: the label map is {sizes[1][0]}x{sizes[1][1]}, its image {image.name} "
                                 f"{sizes[0][0]}x{sizes[0][1]}")
        self.images, self.masks = images, masks
        self._description = description or f"{images} + {masks}"
        self._bad: set[Path] = set()

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{self._description} ({len(self._pairs) - len(self._bad)} images with masks)"

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def skipped(self) -> int:
        return len(self._bad)

    def digest(self) -> str:
        h = hashlib.sha256()
        for image, mask in self._pairs:
            h.update(f"{image.relative_to(self.images).as_posix()}\0".encode())
            for path in (image, mask):
                with open(path, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
        return h.hexdigest()

    def masked_frames(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for image, mask in self._pairs:
            if (img := _decode_noted(image, self._bad)) is not None:
                yield np.asarray(img, dtype=np.uint8), load_mask(mask)

    def frames(self) -> Iterator[tuple[np.ndarray, int]]:
        for image, _mask in self._pairs:
            if (img := _decode_noted(image, self._bad)) is not None:
                yield np.asarray(img, dtype=np.uint8), -1

    def batches(self, pp: Preprocess, *, batch_size: int) -> Iterator[Batch]:
        images: list[np.ndarray] = []
        for image, _mask in self._pairs:
            if (img := _decode_noted(image, self._bad)) is None:
                continue
            images.append(resize_crop(img, pp))
            if len(images) == batch_size:
                yield Batch(np.stack(images), None, None)
                images = []
        if images:
            yield Batch(np.stack(images), None, None)


#: a Pascal VOC root (``VOCdevkit/VOC2012``): its images, label maps and image lists per split
VOC_IMAGES, VOC_MASKS, VOC_LISTS = "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"


def _voc(root: Path, split: str, count: int | None, seed: int) -> MaskFolderSource:
    """A VOC root: the images of ``ImageSets/Segmentation/{train,val}.txt`` (split train / eval) where
    that list exists, else every image that has a label map in ``SegmentationClass``."""
    listing = root / VOC_LISTS / f"{'val' if split == 'eval' else 'train'}.txt"
    if listing.is_file():
        stems = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        what = f"{root} ({listing.stem})"
    else:
        stems = sorted(p.stem for p in (root / VOC_MASKS).glob("*.png"))
        what = str(root)
    return MaskFolderSource(root / VOC_IMAGES, root / VOC_MASKS, stems=stems, count=count, seed=seed,
                            description=what)


def _digits_seg(part: str, count: int | None, seed: int) -> MaskedArraySource:
    images, masks, _digits = digits_seg_split(part)
    return MaskedArraySource(images, masks, description=f"digits-seg:{part}", class_names=list(DIGITS_SEG_LABELS),
                             count=count, seed=seed)


def open_source(spec: str | os.PathLike[str], *, split: str = "eval", count: int | None = None,
                seed: int = 0) -> DataSource:
    """Open ``spec``: an image folder, a ``.npy``/``.npz`` file, ``digits`` / ``digits:train`` / ``digits:eval``;
    for segmentation, ``digits-seg`` / ``digits-seg:train`` / ``digits-seg:eval``, a Pascal VOC root
    (a folder holding ``JPEGImages/`` and ``SegmentationClass/``), ``IMAGES:MASKS`` (two folders:
    images, and PNG label maps of the same names) or an ``.npz`` with ``images`` and ``masks``.

    ``split`` picks the digits (or digits-seg) part when ``spec`` does not name one: calibration passes "train",
    evaluation "eval", so the held-out part never calibrates. ``count`` takes a seeded subset.
    """
    text = str(spec)
    if text == "digits-seg" or text.startswith("digits-seg:"):
        part = text.partition(":")[2] or split
        if part not in ("train", "eval"):
            raise UsageError(f"digits-seg split must be 'train' or 'eval', got {part!r}")
        return _digits_seg(part, count, seed)
    if text == "digits" or text.startswith("digits:"):
        part = text.partition(":")[2] or split
        x, y = digits_split(part)
        return ArraySource(x, y, description=f"digits:{part}", class_names=[str(i) for i in range(10)],
                           count=count, seed=seed)
    path = Path(text)
    if path.is_dir():
        if (path / VOC_IMAGES).is_dir() and (path / VOC_MASKS).is_dir():
            return _voc(path, split, count, seed)
        return ImageFolderSource(path, count=count, seed=seed)
    images, sep, masks = text.rpartition(":")
    if sep and not path.exists() and Path(images).is_dir():
        return MaskFolderSource(Path(images), Path(masks), count=count, seed=seed)
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder (data is an image folder, .npy, .npz or 'digits')")
    masks = None
    if path.suffix == ".npy":
        data, labels = _load_npy(path), None
    elif path.suffix == ".npz":
        data, labels, masks = _load_npz(path)
        if masks is not None:
            return MaskedArraySource(data, masks, description=str(path), count=count, seed=seed)
    else:
        raise UsageError(f"{path}: unsupported data file (expected an image folder, .npy, .npz or 'digits')")
    return ArraySource(data, labels, description=str(path), count=count, seed=seed)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UsageError(f"{path}: cannot read .npy ({exc})") from exc


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(images, labels or None, masks or None): a segmentation .npz holds ``masks`` (N, H, W) uint8 label maps."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            data_key = next((k for k in ("images", "x", "input", "data") if k in keys), None)
            if data_key is None:
                if len(keys) != 1:
                    raise UsageError(f"{path}: name the array 'images' or 'x' (found {sorted(keys)})")
                data_key = keys.pop()
            label_key = next((k for k in ("labels", "y") if k in z.files), None)
            if "masks" in keys and label_key:
                raise UsageError(f"{path}: holds both '{label_key}' (classification) and 'masks' (segmentation); "
                                 "keep one")
            masks = z["masks"] if "masks" in keys and data_key != "masks" else None
            return z[data_key], (z[label_key] if label_key else None), masks
    except (ValueError, OSError) as exc:
        raise UsageError(f"{path}: cannot read .npz ({exc})") from exc


def sample_batch(source: DataSource, pp: Preprocess, input_dtype: str, *, batch_size: int) -> np.ndarray:
    """The first ``batch_size`` samples of ``source`` as a model input (for benchmarks and checks)."""
    for batch in source.batches(pp, batch_size=batch_size):
        return batch.as_input(input_dtype, pp)
    raise UsageError(f"{source.description}: no decodable samples")


def dense_image(frame: np.ndarray, pp: Preprocess) -> Batch:
    """One frame (uint8 HWC RGB) as a segmentation or backbone model sees it: a batch of one, the whole
    image at its own aspect (short side ``pp.resize``, uncropped)."""
    from PIL import Image

    return Batch(resize_short(Image.fromarray(frame, "RGB"), pp.resize)[None], None, None)


def mask_at(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map at ``size`` (height, width): nearest-neighbour, so no class is invented (torchvision's
    segmentation reference resizes its targets so)."""
    from PIL import Image

    if mask.shape == size:
        return mask
    return np.asarray(Image.fromarray(mask, "L").resize((size[1], size[0]), Image.NEAREST))


def dense_batch(source: DataSource, pp: Preprocess, input_dtype: str) -> np.ndarray:
    """The first image of ``source`` as a dense model's input (``dense_image``)."""
    for frame, _label in source.frames():
        return dense_image(frame, pp).as_input(input_dtype, pp)
    raise UsageError(f"{source.description}: no decodable samples")
