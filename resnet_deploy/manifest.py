"""The artifact manifest: how to feed an artifact and how close it is to PyTorch (docs/user-guide.md, "The manifest").

Written beside every artifact as ``<artifact>.json`` (``model.onnx`` -> ``model.onnx.json``) and,
for ONNX, into ``metadata_props`` under the key ``resnet_deploy``. Standard library only: the
runtime reads manifests on devices that have neither torch nor onnx.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.archs import TASKS
from resnet_deploy.errors import UsageError
from resnet_deploy.publish import check_sha256

FORMAT = "resnet-deploy/1"
METADATA_KEY = "resnet_deploy"

# torchvision's ImageNet normalisation (ImageClassification preset).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """torchvision ImageClassification preset: resize short side, center crop, /255, mean/std."""

    resize: int = 256  # short side, pixels, before the crop
    crop: int = 224  # square crop, pixels; the network input size. 0: no crop (segment, backbone)
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class InputSpec:
    name: str = "input"
    dtype: str = "float32"  # "float32": NCHW normalised; "uint8": raw NHWC RGB, normalised in-graph
    layout: str = "NCHW"
    shape: tuple[int, ...] = (-1, 3, 224, 224)  # -1 = dynamic batch
    color: str = "RGB"

    @property
    def hw_axes(self) -> tuple[int, int]:
        """The axes of height and width in ``shape``: (1, 2) for NHWC, (2, 3) for NCHW."""
        return (1, 2) if self.layout == "NHWC" else (2, 3)


@dataclass(frozen=True)
class BatchRange:
    min: int = 1
    opt: int = 8
    max: int = 64


@dataclass(frozen=True)
class SizeRange:
    """Bounds of a dynamic-size input (segmentation, backbones): each of height and width in ``min..max``.

    ``opt`` (height, width) is the size TensorRT profiles tune for: the preprocessed image of the
    usual aspect.
    """

    min: int = 32
    opt: tuple[int, int] = (520, 693)
    max: int = 1024

    @staticmethod
    def tuned(resize: int, max_size: int | None = None) -> tuple[int, int]:
        """The (height, width) a dense model is tuned and timed at: a 4:3 landscape image at short side ``resize``."""
        width = round(resize * 4 / 3)
        return resize, width if max_size is None else min(max_size, width)

    def check(self, height: int, width: int) -> str | None:
        """None when ``height`` x ``width`` is within bounds, else what is wrong, in words."""
        if self.min <= height <= self.max and self.min <= width <= self.max:
            return None
        return f"{height}x{width} is outside this model's sizes (height and width each in {self.min}..{self.max})"


@dataclass
class Manifest:
    arch: str
    num_classes: int
    precision: str  # fp32 | fp16 | int8
    input: InputSpec
    preprocess: Preprocess
    batch: BatchRange
    labels: list[str] | None = None
    output: dict[str, Any] = field(default_factory=lambda: {"name": "logits"})
    source: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    build: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # Stage-specific facts (layers kept in higher precision, quantization target, ...).
    details: dict[str, Any] = field(default_factory=dict)
    # archs.TASKS: "classify" (logits), "segment" (scores per pixel at the input size) or "backbone"
    # (named stage outputs). Manifests written before tasks existed are classifiers.
    task: str = "classify"
    # Dynamic height and width bounds (segment, backbone); None: the fixed size of ``input.shape``.
    size: SizeRange | None = None
    # The recorded PyTorch reference beside the artifact (recorded.py): its sha256, the data's digest.
    reference: dict[str, Any] | None = None
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input"]["shape"] = list(self.input.shape)
        d["preprocess"]["mean"] = list(self.preprocess.mean)
        d["preprocess"]["std"] = list(self.preprocess.std)
        if self.size is not None:
            d["size"]["opt"] = list(self.size.opt)
        return {"format": d.pop("format"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, origin: str = "manifest") -> Manifest:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UsageError(f"{origin}: not a resnet-deploy manifest (format {FORMAT!r} expected)")
        try:
            inp = dict(d["input"])
            inp["shape"] = tuple(inp["shape"])
            pre = dict(d["preprocess"])
            pre["mean"] = tuple(pre["mean"])
            pre["std"] = tuple(pre["std"])
            known = {f.name for f in dataclasses.fields(cls)}
            rest = {k: v for k, v in d.items() if k in known and k not in ("input", "preprocess", "batch", "size")}
            if d.get("task", "classify") not in TASKS:
                raise ValueError(f"task {d.get('task')!r} is none of {', '.join(TASKS)}")
            size = d.get("size")
            if size is not None:
                size = SizeRange(**{**size, "opt": tuple(size["opt"])})
            return cls(
                input=InputSpec(**inp),
                preprocess=Preprocess(**pre),
                batch=BatchRange(**d["batch"]),
                size=size,
                **rest,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{origin}: malformed manifest ({exc})") from exc

    @classmethod
    def from_json(cls, text: str, *, origin: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{origin}: manifest is not valid JSON ({exc})") from exc
        return cls.from_dict(data, origin=origin)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The graph's outputs in order: ``output.names`` (backbones), else the one ``output.name``."""
        return tuple(self.output.get("names") or [self.output.get("name", "logits")])

    def derive(self, **changes: Any) -> Manifest:
        """A copy for a child artifact (FP16, INT8, engine) with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: one sidecar per artifact, never shared."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def read_manifest(artifact: str | os.PathLike[str], *, required: bool = False) -> Manifest | None:
    """The sidecar manifest of ``artifact``, or None where there is none and it is not required.

    The sidecar must belong to ``artifact``: the sha256 it records is checked against the file
    (cheaply: each unchanged file is hashed once per process).
    """
    path = manifest_path(artifact)
    if not path.is_file():
        if required:
            raise UsageError(f"{path}: manifest not found (every artifact needs its sidecar)")
        return None
    manifest = Manifest.from_json(path.read_text(encoding="utf-8"), origin=str(path))
    check_sha256(artifact, manifest.source.get("sha256"), origin=str(path))
    return manifest


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (distribution names), without importing them."""
    from importlib import metadata

    from resnet_deploy import __version__

    out = {"resnet_deploy": __version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def require_classifier(manifest: Manifest, path: object, *, what: str) -> None:
    """Refuse, in one line, a segmentation or backbone artifact where ``what`` handles classifiers only."""
    if manifest.task != "classify":
        raise UsageError(f"{path}: is a {manifest.task} model; {what} takes classifiers so far (docs/tasks.md)")
