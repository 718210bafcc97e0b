"""How close DeepStream's input comes to what PyTorch saw: measured on real images, not asserted.

The reference is the PyTorch model (rebuilt from the manifest) on the manifest's preprocessing
(torchvision's short-side resize, center crop, per-channel mean/std). The candidate is the
emitted ONNX in onnxruntime on what nvinfer would hand TensorRT, computed by
:class:`~resnet_deploy.deploy.nvinfer_preprocess.NvinferPreprocess` from the written
configuration file itself. Both see the same frames; the figures are the project's parity
figures (top-1 agreement, drop, logit differences).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from resnet_deploy.data import normalize, resize_crop
from resnet_deploy.deploy.nvinfer_preprocess import NvinferPreprocess
from resnet_deploy.errors import GateError
from resnet_deploy.parity import Parity, ParityAccumulator

#: seeded crops of scikit-learn's two sample photos, at aspect ratios 1:2 to 2:1
PHOTO_CROPS = 30
BATCH = 16


@dataclass
class FidelityRow:
    data: str
    normalisation: str  # "exact (in-graph mean/std)" | "approximate (scalar scale)" | ...
    geometry: str  # how nvinfer scaled the frames
    config: str  # the configuration file the emulation read
    parity: Parity

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "parity"}, "parity": self.parity.to_dict()}


def sample_photos(*, crops: int = PHOTO_CROPS, seed: int = 0) -> tuple[str, list[np.ndarray]]:
    """scikit-learn's china.jpg and flower.jpg (640x427) and ``crops`` seeded non-square crops of each."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    out = []
    for img in load_sample_images().images:
        img = np.ascontiguousarray(img, dtype=np.uint8)
        out.append(img)
        h, w = img.shape[:2]
        for _ in range(crops):
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height
            area = rng.uniform(0.2, 0.9) * h * w
            ch = int(min(h, np.sqrt(area / aspect)))
            cw = int(min(w, ch * aspect))
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            out.append(np.ascontiguousarray(img[top : top + ch, left : left + cw]))
    return f"photos: scikit-learn's china.jpg, flower.jpg + {2 * crops} crops (aspect 1:2 to 2:1)", out


class FrameSet:
    """Frames and labels with the reference's logits, computed once and compared many times."""

    def __init__(self, description: str, frames: Iterable[tuple[np.ndarray, int]], reference, pp) -> None:
        from PIL import Image

        self.description = description
        self.frames: list[np.ndarray] = []
        labels: list[int] = []
        logits = []
        for chunk in _chunks(frames, BATCH):
            imgs = [f for f, _ in chunk]
            crops = np.stack([resize_crop(Image.fromarray(f, "RGB"), pp) for f in imgs])
            logits.append(reference.run(normalize(crops, pp)))
            self.frames += imgs
            labels += [lab for _, lab in chunk]
        if not self.frames:
            raise GateError(f"{description}: no decodable images to measure DeepStream's fidelity on")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.labelled = bool((self.labels >= 0).all())
        self.reference = np.concatenate(logits)
        counted = description.endswith(("samples)", "images)"))  # data sources name their size already
        self.description = description if counted else f"{description} ({len(self.frames)} images)"

    def compare(self, session, nvinfer: NvinferPreprocess) -> Parity:
        """``session`` (logits first) on nvinfer's tensors of these frames, against the reference."""
        acc = ParityAccumulator(self.description)
        for start in range(0, len(self.frames), BATCH):
            x = nvinfer.tensor(self.frames[start : start + BATCH])
            labels = self.labels[start : start + BATCH] if self.labelled else None
            acc.update(self.reference[start : start + BATCH], session.run(x), labels)
        return acc.result()


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def describe_geometry(nvinfer: NvinferPreprocess) -> str:
    filt = {0: "nearest", 1: "bilinear", 6: "default (GPU nearest)"}[nvinfer.scaling_filter]
    if not nvinfer.maintain_aspect_ratio:
        how = "whole frame stretched"
    else:
        how = "aspect kept, black padding " + ("both sides" if nvinfer.symmetric_padding else "right/bottom")
    return f"{how} to {nvinfer.width}x{nvinfer.height}, {filt}"


def measure(frame_set: FrameSet, session, config_path: str | os.PathLike[str], *, normalisation: str,
            override: dict | None = None) -> FidelityRow:
    """One row: the emulation reads ``config_path`` (``override`` replaces fields, for alternatives)."""
    import dataclasses
    from pathlib import Path

    nvinfer = NvinferPreprocess.from_config(config_path)
    if override:
        nvinfer = dataclasses.replace(nvinfer, **override)
    return FidelityRow(data=frame_set.description, normalisation=normalisation, geometry=describe_geometry(nvinfer),
                       config=Path(config_path).name, parity=frame_set.compare(session, nvinfer))
