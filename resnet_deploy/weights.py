"""Where weights come from: a checkpoint file, torchvision's enums, the demo model, or nothing.

Loading never executes code from the input (shared/RELIABILITY.md #1): ``.pth`` files load with
``torch.load(weights_only=True)`` and there is no silent retry without it; ``.safetensors`` hold
tensors only. Key problems are summarised in one line that says what to do.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.manifest import Preprocess
from resnet_deploy.models import ARCHS, build_model
from resnet_deploy.publish import sha256_file

if TYPE_CHECKING:
    import torch

    from resnet_deploy.models import ResNet

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


@dataclass
class LoadedModel:
    """A ready model in eval mode and what the manifest needs to know about it."""

    model: ResNet
    arch: str
    num_classes: int
    weights: str  # "random", "demo", "torchvision:<enum>", or the checkpoint path
    weights_sha256: str | None
    preprocess: Preprocess | None = None  # a preset the weights come with (torchvision, demo)
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def load_model(arch: str, weights: str | os.PathLike[str] | None, *, num_classes: int | None = None) -> LoadedModel:
    """Build ``arch`` and load ``weights`` into it (None: random init, with a warning)."""
    if arch not in ARCHS:
        raise UsageError(f"unknown arch {arch!r} (choose from {', '.join(ARCHS)})")
    if weights is None:
        import torch

        warnings.warn(f"no --weights given: exporting an untrained {arch} (random initialisation, seed 0)", stacklevel=2)
        with torch.random.fork_rng():  # seeded, so the same command gives the same ONNX bytes
            torch.manual_seed(0)
            model = build_model(arch, num_classes=num_classes or 1000)
        return LoadedModel(model, arch, num_classes or 1000, "random", state_digest(model))
    text = str(weights)
    if text == "demo":
        from resnet_deploy import demo

        if num_classes not in (None, demo.NUM_CLASSES):
            raise UsageError(f"--weights demo has {demo.NUM_CLASSES} classes; drop --num-classes {num_classes}")
        model, digest = demo.trained_model(arch)
        return LoadedModel(model, arch, demo.NUM_CLASSES, "demo", digest, preprocess=demo.PREPROCESS,
                           labels=list(demo.LABELS))
    if text == "torchvision" or text.startswith("torchvision:"):
        return _torchvision_model(arch, text.partition(":")[2] or "DEFAULT", num_classes)
    path = Path(text)
    state = read_state_dict(path)
    head = state.get("fc.weight")
    classes = num_classes or 1000
    model = build_model(arch, num_classes=classes)
    check_keys(model, state, arch=arch, origin=str(path))
    if head is not None and head.shape[0] != classes:
        raise UsageError(
            f"{path}: the checkpoint's head has {head.shape[0]} classes, the model {classes}; "
            f"use --num-classes {head.shape[0]}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # same names, other shapes
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise UsageError(f"{path}: weights do not fit {arch}: {detail[:200]}") from exc
    return LoadedModel(model.eval(), arch, classes, str(path), sha256_file(path))


def resolve_preprocess(loaded: LoadedModel, *, image_size: int | None = None, resize: int | None = None) -> Preprocess:
    """The preprocessing ``loaded`` is fed with: its weights' preset, at ``image_size``/``resize`` where given.

    A new ``image_size`` without ``resize`` keeps torchvision's 256/224 ratio.
    """
    preset = loaded.preprocess or Preprocess()
    crop = image_size or preset.crop
    if resize is None:
        resize = preset.resize if image_size is None or image_size == preset.crop else round(crop * 256 / 224)
    if crop < 32 or resize < crop:
        raise UsageError(f"image size {crop} / resize {resize}: need image size >= 32 and resize >= image size")
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


def check_keys(model: ResNet, state: dict[str, Any], *, arch: str, origin: str) -> None:
    """Raise one line summarising missing/unexpected keys, naming the arch the weights look like."""
    expected = set(model.state_dict())
    got = set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if not missing and not unexpected:
        return
    guess = guess_arch(got)
    hint = f"; these weights look like {guess}: use --arch {guess}" if guess and guess != arch else ""
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
        if layers == blocks and (block.expansion == 4) == bottleneck:
            return name
    return None


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") if keys else "none"


def _torchvision_model(arch: str, enum_name: str, num_classes: int | None) -> LoadedModel:
    try:
        import torchvision
    except Exception as exc:  # ImportError, or the operator-registration error of a mismatched build
        raise MissingDependencyError(
            f"--weights torchvision needs torchvision matching your torch ({str(exc).splitlines()[0]}); "
            "or download the checkpoint and pass --weights FILE.pth"
        ) from exc
    enum = f"{arch.replace('resnet', 'ResNet')}_Weights.{enum_name}"
    try:
        tv_weights = torchvision.models.get_weight(enum)
    except (ValueError, KeyError, AttributeError) as exc:
        raise UsageError(f"torchvision has no weights {enum}") from exc
    classes = len(tv_weights.meta["categories"])
    if num_classes not in (None, classes):
        raise UsageError(f"torchvision weights {enum} have {classes} classes; drop --num-classes {num_classes}")
    try:
        state = tv_weights.get_state_dict(progress=True)
    except Exception as exc:  # urllib/OSError: no network
        raise DeployError(f"cannot download {enum} ({exc}); download it elsewhere and pass --weights FILE.pth") from exc
    model = build_model(arch, num_classes=classes)
    model.load_state_dict(state, strict=True)
    t = tv_weights.transforms()
    preprocess = Preprocess(resize=int(t.resize_size[0]), crop=int(t.crop_size[0]),
                            mean=tuple(t.mean), std=tuple(t.std))
    return LoadedModel(model.eval(), arch, classes, f"torchvision:{enum}", state_digest(model),
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
