"""Where weights come from: a checkpoint file, torchvision's enums, the demo model, or nothing.

``Weights`` is that choice as one typed value, parsed once where it enters (a CLI option, a
``torch:ARCH:WEIGHTS`` spec, a manifest) and written back as its ``label``, which parses to the
same value: what the manifest records loads again when typed back in. It imports no torch.

Loading never executes code from the input (docs/reliability.md, promise 1): ``.pth`` files load
with ``torch.load(weights_only=True)`` and there is no silent retry without it; ``.safetensors``
hold tensors only. Key problems are summarised in one line that says what to do.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy.archs import ARCHS, MODEL_NAMES, STAGES, resolve_task
from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.manifest import Preprocess
from resnet_deploy.publish import sha256_file

if TYPE_CHECKING:
    import torch

    from resnet_deploy.manifest import Manifest

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
#: the short side segmentation and backbone inputs are resized to by default (torchvision's SemanticSegmentation)
DENSE_RESIZE = 520
#: the kinds of ``Weights``; the first three are also their labels
KINDS = ("random", "demo", "torchvision", "file")


@dataclass(frozen=True, eq=False)
class Weights:
    """Where a model's weights come from: ``random`` (seed 0), ``demo``, ``torchvision[:ENUM]`` or a file.

    ``Weights.parse`` takes every spelling: None, "" and "random" (untrained), "demo",
    "torchvision" (its DEFAULT enum), "torchvision:IMAGENET1K_V2" or
    "torchvision:ResNet50_Weights.IMAGENET1K_V2", and anything else as a checkpoint path, kept as
    written. ``label`` is what manifests, reports and ``torch:ARCH:WEIGHTS`` specs carry;
    ``Weights.parse(w.label) == w`` for every value. Like a string enum, a value also equals its
    spellings: ``Weights.parse("demo") == "demo"``.
    """

    kind: str  # one of KINDS
    name: str | None = None  # torchvision: the enum ("DEFAULT", "IMAGENET1K_V2", "ResNet50_Weights.X"); file: the path

    @classmethod
    def parse(cls, value: Weights | str | os.PathLike[str] | None) -> Weights:
        if isinstance(value, Weights):
            return value
        text = "" if value is None else os.fspath(value)
        if text in ("", "random"):
            return cls("random")
        if text == "demo":
            return cls("demo")
        if text == "torchvision" or text.startswith("torchvision:"):
            return cls("torchvision", text.partition(":")[2] or "DEFAULT")
        return cls("file", text)

    @classmethod
    def of(cls, manifest: Manifest) -> Weights | None:
        """The weights an artifact's manifest says it was made from (None where it does not say)."""
        label = (manifest.source or {}).get("weights")
        return None if not label else cls.parse(label)

    @property
    def label(self) -> str:
        if self.kind == "torchvision":
            return f"torchvision:{self.name}"
        return self.name if self.kind == "file" else self.kind

    def __str__(self) -> str:
        return self.label

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, os.PathLike)):
            other = Weights.parse(other)
        return isinstance(other, Weights) and (self.kind, self.name) == (other.kind, other.name)

    def __hash__(self) -> int:
        return hash((self.kind, self.name))

    @property
    def path(self) -> Path | None:
        return Path(self.name) if self.kind == "file" else None

    def data_for(self, task: str) -> str | None:
        """The data source these weights are calibrated and evaluated on for ``task`` when none is named:
        the demo's digits (classify) or digits-seg (segment); None for other weights."""
        if self.kind == "demo":
            from resnet_deploy import demo

            return {"classify": demo.DATA, "segment": demo.SEG_DATA}.get(task)
        return None


@dataclass
class LoadedModel:
    """A ready model in eval mode and what the manifest needs to know about it."""

    model: torch.nn.Module  # a ResNet (classify), heads.Segmenter (segment) or heads.Backbone (backbone)
    arch: str  # the model's name: a ResNet, or a segmentation model of archs.SEGMENTERS
    num_classes: int  # 0 for a backbone
    weights: Weights
    weights_sha256: str | None
    preprocess: Preprocess | None = None  # a preset the weights come with (torchvision, demo)
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    task: str = "classify"  # archs.TASKS
    outputs: tuple[str, ...] = ("logits",)  # the graph's output names
    size: tuple[int, int] | None = None  # segment/backbone: the (min, max) height/width the weights come with


def load_model(arch: str, weights: Weights | str | os.PathLike[str] | None, *,
               num_classes: int | None = None, task: str | None = None,
               outputs: tuple[str, ...] | None = None) -> LoadedModel:
    """Build ``arch`` for ``task`` and load ``weights`` into it (None or "random": seeded random init, with a warning).

    ``task`` (``archs.resolve_task``): None or "classify" for a ResNet's classifier, "segment"
    (implied by a segmentation model's name), "backbone" (the trunk, returning ``outputs``, a
    subset of c2..c5, all of them by default).
    """
    from resnet_deploy.models import build_model

    if arch not in MODEL_NAMES:
        raise UsageError(f"unknown `arch` {arch!r} (choose from {', '.join(MODEL_NAMES)})")
    try:
        arch, task = resolve_task(arch, task)
    except ValueError as exc:
        raise UsageError(str(exc).replace("task ", "`task` ", 1)) from exc
    if outputs is not None and task != "backbone":
        raise UsageError("`outputs` names a backbone's stage outputs; it needs `task` backbone")
    weights = Weights.parse(weights)
    if task != "classify":
        return _load_dense(arch, task, weights, num_classes=num_classes, outputs=outputs)
    if weights.kind == "random":
        import torch

        warnings.warn(f"no weights given: exporting an untrained {arch} (random initialisation, seed 0)", stacklevel=2)
        with torch.random.fork_rng():  # seeded, so the same command gives the same ONNX bytes
            torch.manual_seed(0)
            model = build_model(arch, num_classes=num_classes or 1000)
        return LoadedModel(model, arch, num_classes or 1000, weights, state_digest(model))
    if weights.kind == "demo":
        from resnet_deploy import demo

        if num_classes not in (None, demo.NUM_CLASSES):
            raise UsageError(f"the demo weights have {demo.NUM_CLASSES} classes; drop `num_classes` {num_classes}")
        model, digest = demo.trained_model(arch)
        return LoadedModel(model, arch, demo.NUM_CLASSES, weights, digest, preprocess=demo.PREPROCESS,
                           labels=list(demo.LABELS))
    if weights.kind == "torchvision":
        return _torchvision_model(arch, weights, num_classes)
    path = weights.path
    state = read_state_dict(path)
    head = state.get("fc.weight")
    classes = num_classes or 1000
    model = build_model(arch, num_classes=classes)
    check_keys(model, state, arch=arch, origin=str(path))
    if head is not None and head.shape[0] != classes:
        raise UsageError(
            f"{path}: the checkpoint's head has {head.shape[0]} classes, the model {classes}; "
            f"use `num_classes` {head.shape[0]}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # same names, other shapes
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise UsageError(f"{path}: weights do not fit {arch}: {detail[:200]}") from exc
    return LoadedModel(model.eval(), arch, classes, weights, sha256_file(path))


def _load_dense(arch: str, task: str, weights: Weights, *, num_classes: int | None,
                outputs: tuple[str, ...] | None) -> LoadedModel:
    """A segmentation model or a backbone with ``weights`` (random or a checkpoint file).

    A segmentation checkpoint's auxiliary head (``aux_classifier.*``, training only) and a
    classification checkpoint's ``fc.*`` loaded as a backbone are dropped, with a note.
    """
    import torch

    from resnet_deploy import heads

    if task == "backbone" and num_classes is not None:
        raise UsageError("a backbone has no classes; drop `num_classes`")
    if weights.kind == "demo" and task == "segment":
        from resnet_deploy import demo

        if num_classes not in (None, len(demo.SEG_LABELS)):
            raise UsageError(f"the demo segmenter has {len(demo.SEG_LABELS)} classes; drop `num_classes` {num_classes}")
        try:
            model, digest = demo.trained_segmenter(arch)
        except UsageError as exc:
            raise UsageError(f"{exc}: use `arch` {demo.SEG_ARCH} (or resnet18 with `task` segment)") from exc
        return LoadedModel(model, arch, len(demo.SEG_LABELS), weights, digest, preprocess=demo.SEG_PREPROCESS,
                           labels=list(demo.SEG_LABELS), task=task, outputs=("scores",), size=demo.SEG_SIZE)
    if weights.kind in ("demo", "torchvision"):
        what = "classifiers' and a segmenter's (fcn_resnet18)" if weights.kind == "demo" else "classifiers'"
        raise UsageError(f"{weights.kind} weights are {what} here; for `task` {task} pass a checkpoint file "
                         "as `weights` (torchvision's load: save its state_dict)")

    def build(classes: int) -> torch.nn.Module:
        try:
            if task == "segment":
                return heads.build_segmenter(arch, num_classes=classes)
            return heads.build_backbone(arch, outputs or STAGES)
        except ValueError as exc:
            raise UsageError(str(exc).replace("outputs", "`outputs`", 1)) from exc

    def loaded(model: torch.nn.Module, classes: int, digest: str | None, notes: list[str]) -> LoadedModel:
        names = tuple(getattr(model, "outputs", ("scores",)))
        return LoadedModel(model.eval(), arch, classes if task == "segment" else 0, weights, digest, notes=notes,
                           task=task, outputs=names)

    if weights.kind == "random":
        warnings.warn(f"no weights given: exporting an untrained {arch} {task} (random initialisation, seed 0)",
                      stacklevel=3)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build(num_classes or 21)
        return loaded(model, num_classes or 21, state_digest(model), [])
    path = weights.path
    state = read_state_dict(path)
    drop = heads.AUX_PREFIX if task == "segment" else "fc."
    kept = {k: v for k, v in state.items() if not k.startswith(drop)}
    notes = [f"dropped {len(state) - len(kept)} {drop}* tensors (not part of the {task} export)"] if len(kept) < len(state) else []
    head = kept.get(heads.HEAD_KEY) if task == "segment" else None
    classes = num_classes or (int(head.shape[0]) if head is not None else 21)
    if head is not None and head.shape[0] != classes:
        raise UsageError(f"{path}: the checkpoint's head has {head.shape[0]} classes, the model {classes}; "
                         f"use `num_classes` {head.shape[0]}")
    model = build(classes)
    check_keys(model, kept, arch=arch, origin=str(path))
    try:
        model.load_state_dict(kept, strict=True)
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise UsageError(f"{path}: weights do not fit {arch}: {detail[:200]}") from exc
    return loaded(model, classes, sha256_file(path), notes)


def resolve_preprocess(loaded: LoadedModel, *, image_size: int | None = None, resize: int | None = None) -> Preprocess:
    """The preprocessing ``loaded`` is fed with: its weights' preset, at ``image_size``/``resize`` where given.

    A new ``image_size`` without ``resize`` keeps torchvision's 256/224 ratio. Segmentation and
    backbones take the whole image, its short side resized to ``resize`` (default 520, torchvision's
    SemanticSegmentation preset), uncropped (``crop`` 0).
    """
    preset = loaded.preprocess or Preprocess()
    if loaded.task != "classify":
        if image_size is not None:
            raise UsageError(f"`image_size` is a classifier's crop; a {loaded.task} model takes the whole image, "
                             "its short side set by `resize`")
        short = resize or (preset.resize if loaded.preprocess else DENSE_RESIZE)
        if short < 32:
            raise UsageError(f"`resize` {short}: need at least 32")
        return Preprocess(resize=short, crop=0, mean=preset.mean, std=preset.std)
    crop = image_size or preset.crop
    if resize is None:
        resize = preset.resize if image_size is None or image_size == preset.crop else round(crop * 256 / 224)
    if crop < 32 or resize < crop:
        raise UsageError(f"`image_size` {crop} / `resize` {resize}: need `image_size` >= 32 and `resize` >= `image_size`")
    return Preprocess(resize=resize, crop=crop, mean=preset.mean, std=preset.std)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.safetensors`` file, unwrapped from ``state_dict``/``model`` and ``module.``."""
    import torch

    if path.is_dir():
        raise UsageError(f"{path}: is a directory, expected a checkpoint file")
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: checkpoint file is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UsageError(f"{path}: not a readable safetensors file ({exc})") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # Deliberately no retry with weights_only=False: that would run the pickle's code.
            reason = str(exc).splitlines()[0] if str(exc) else "unsupported pickle content"
            raise UsageError(
                f"{path}: refused to load: it holds more than tensors and could run code ({reason[:160]}); "
                "re-save it as a state_dict or .safetensors"
            ) from exc
        except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
            raise UsageError(f"{path}: not a readable checkpoint, truncated or corrupt ({str(exc).splitlines()[0][:160]})") from exc
    return unwrap_state_dict(obj, origin=str(path))


def unwrap_state_dict(obj: Any, *, origin: str) -> dict[str, torch.Tensor]:
    import torch

    for key in ("state_dict", "model", "model_state_dict", "ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{origin}: expected a state_dict of tensors (optionally under 'state_dict' or 'model')")
    prefixes = ("module.", "_orig_mod.", "model.")
    for prefix in prefixes:  # DataParallel / torch.compile / Lightning wrappers
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def check_keys(model: torch.nn.Module, state: dict[str, Any], *, arch: str, origin: str) -> None:
    """Raise one line summarising missing/unexpected keys, naming the arch the weights look like."""
    expected = set(model.state_dict())
    got = set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if not missing and not unexpected:
        return
    guess = guess_arch(got)
    hint = f"; these weights look like {guess}: use `arch` {guess}" if guess and guess != arch else ""
    raise UsageError(
        f"{origin}: weights do not fit {arch}: {len(missing)} missing keys ({_few(missing)}), "
        f"{len(unexpected)} unexpected ({_few(unexpected)}){hint}"
    )


def guess_arch(keys: set[str]) -> str | None:
    """The arch whose block counts and block type match ``keys``, if any."""
    blocks = [1 + max((int(m.group(1)) for k in keys if (m := re.match(rf"layer{i}\.(\d+)\.", k))), default=-1)
              for i in range(1, 5)]
    bottleneck = any(".conv3." in k for k in keys)
    for name, (block, layers) in ARCHS.items():
        if list(layers) == blocks and (block == "bottleneck") == bottleneck:
            return name
    return None


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") if keys else "none"


def _torchvision_model(arch: str, weights: Weights, num_classes: int | None) -> LoadedModel:
    from resnet_deploy.models import build_model

    try:
        import torchvision
    except Exception as exc:  # ImportError, or the operator-registration error of a mismatched build
        raise MissingDependencyError(
            f"torchvision weights need torchvision matching your torch ({str(exc).splitlines()[0]}); "
            "or download the checkpoint and pass its file as `weights`"
        ) from exc
    family = f"{arch.replace('resnet', 'ResNet')}_Weights"
    enum = weights.name if "." in weights.name else f"{family}.{weights.name}"
    if enum.partition(".")[0] != family:
        raise UsageError(f"torchvision weights {enum} are not {arch}'s ({family})")
    try:
        tv_weights = torchvision.models.get_weight(enum)
    except (ValueError, KeyError, AttributeError) as exc:
        raise UsageError(f"torchvision has no weights {enum}") from exc
    classes = len(tv_weights.meta["categories"])
    if num_classes not in (None, classes):
        raise UsageError(f"torchvision weights {enum} have {classes} classes; drop `num_classes` {num_classes}")
    try:
        state = tv_weights.get_state_dict(progress=True)
    except Exception as exc:  # urllib/OSError: no network
        raise DeployError(f"cannot download {enum} ({exc}); download it elsewhere and pass its file as `weights`") from exc
    model = build_model(arch, num_classes=classes)
    model.load_state_dict(state, strict=True)
    t = tv_weights.transforms()
    preprocess = Preprocess(resize=int(t.resize_size[0]), crop=int(t.crop_size[0]),
                            mean=tuple(t.mean), std=tuple(t.std))
    return LoadedModel(model.eval(), arch, classes, Weights("torchvision", enum), state_digest(model),
                       preprocess=preprocess, labels=list(tv_weights.meta["categories"]))


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over a model's state_dict (names, dtypes, shapes, bytes): identifies weights without a file."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())  # numpy has no bfloat16
    return h.hexdigest()
