"""The built-in demo models: a ResNet trained on the train split of scikit-learn's real digits, and
an FCN-ResNet18 segmenter trained on digits-seg (those digits placed on larger canvases).

They let every command run on a fresh machine with no download. Training is deterministic
(seeded, fixed data order) and cached under the user cache directory as safetensors; the
cache file name carries the recipe version, so a changed recipe never reuses old weights.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.data import DIGITS_SEG_CANVAS, DIGITS_SEG_LABELS, IGNORE
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import Preprocess
from resnet_deploy.publish import atomic_path, sha256_file

if TYPE_CHECKING:
    import torch

    from resnet_deploy.heads import Segmenter
    from resnet_deploy.models import ResNet

NUM_CLASSES = 10
#: the data the demo is trained, calibrated and evaluated on (``data.open_source`` picks the split)
DATA = "digits"
LABELS = [str(i) for i in range(NUM_CLASSES)]
# Digits are 8x8; a 4x bilinear upscale gives the ResNet stem (stride 32 overall) a 1x1 final map.
PREPROCESS = Preprocess(resize=32, crop=32)
RECIPE = "v1"  # bump when anything below changes
EPOCHS = 12
BATCH = 64
LR = 0.05
SEED = 0

#: the demo segmenter: an FCN head on the demo ResNet-18's trunk, fine-tuned on digits-seg:train
SEG_ARCH = "fcn_resnet18"
SEG_DATA = "digits-seg"
SEG_LABELS = list(DIGITS_SEG_LABELS)
# The whole canvas, as it is: the short side stays 96, so the digits keep the classifier demo's scale.
SEG_PREPROCESS = Preprocess(resize=DIGITS_SEG_CANVAS, crop=0)
#: the height/width bounds of its exported graph: a third of the canvas to twice it
SEG_SIZE = (32, 2 * DIGITS_SEG_CANVAS)
SEG_RECIPE = "s1"  # bump when anything of train_segmenter changes (the trunk's RECIPE is in the name too)
SEG_EPOCHS = 10  # each a new composition of the train digits (digits_seg_split's rounds)
SEG_BATCH = 16
SEG_LR = 0.05
SEG_BACKGROUND_WEIGHT = 0.2  # of the loss on a background pixel, against 1 on a digit's


def cache_dir() -> Path:
    """``$RESNET_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/resnet-deploy``, else ``~/.cache/resnet-deploy``."""
    if env := os.environ.get("RESNET_DEPLOY_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "resnet-deploy"


def trained_model(arch: str) -> tuple[ResNet, str]:
    """The demo ``arch`` trained on digits (eval mode), from the cache or trained now (tens of seconds),
    and the sha256 of its cached weights file. ``weights.load_model(arch, "demo")`` wraps it."""
    import torch

    from resnet_deploy.models import build_model

    with torch.random.fork_rng():  # seeded initialisation: the same weights on every machine
        torch.manual_seed(SEED)
        model = build_model(arch, num_classes=NUM_CLASSES)
    digest = _cached(cache_dir() / f"demo-{arch}-{RECIPE}.safetensors", model, lambda: train(model))
    return model.eval(), digest


def trained_segmenter(name: str) -> tuple[Segmenter, str]:
    """The demo segmenter (eval mode), from the cache or trained now (about a minute on two cores; the
    demo ResNet-18 first where that is not cached either), and the sha256 of its cached weights file.
    ``weights.load_model(SEG_ARCH, "demo")`` wraps it."""
    import torch

    from resnet_deploy.heads import build_segmenter

    if name != SEG_ARCH:
        raise UsageError(f"the demo segmentation weights are {SEG_ARCH}'s (trained on {SEG_DATA}), not {name}'s")
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = build_segmenter(name, num_classes=len(SEG_LABELS))

    def fit() -> None:
        trunk, _ = trained_model("resnet18")
        model.backbone.load_state_dict({k: v for k, v in trunk.state_dict().items() if not k.startswith("fc.")})
        train_segmenter(model)

    digest = _cached(cache_dir() / f"demo-{name}-{RECIPE}{SEG_RECIPE}.safetensors", model, fit)
    return model.eval(), digest


def _cached(path: Path, model: torch.nn.Module, fit: Callable[[], None]) -> str:
    """Load ``path`` into ``model``, or ``fit()`` it and publish the weights there; the file's sha256."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except Exception:  # a corrupt cache entry is retrained, not trusted
            path.unlink(missing_ok=True)
    if not path.is_file():
        fit()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, record=False) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return sha256_file(path)


def train(model) -> None:
    """SGD with momentum and a one-cycle schedule on digits:train, preprocessed as at inference."""
    import torch

    from PIL import Image

    from resnet_deploy.data import digits_split, normalize, resize_crop, to_rgb8

    x_u8, y = digits_split("train")
    images = np.stack([resize_crop(to_rgb8(Image.fromarray(img)), PREPROCESS) for img in x_u8])
    x = torch.from_numpy(normalize(images, PREPROCESS))
    y = torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(SEED)

    def batches(_epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            # Random shifts of up to 2 pixels: cheap augmentation that digits need to generalise.
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            yield torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3)), y[idx]

    _fit(model, batches, epochs=EPOCHS, steps=EPOCHS * ((len(x) + BATCH - 1) // BATCH), lr=LR,
         loss=torch.nn.functional.cross_entropy, label=f"training the demo model on digits ({EPOCHS} epochs)")


def train_segmenter(model: Segmenter) -> None:
    """The classifier's recipe on digits-seg:train: per-pixel cross-entropy (255 ignored), a new
    composition of the train digits each epoch (``digits_seg_split`` round = epoch)."""
    import torch

    from resnet_deploy.data import digits_seg_split, normalize

    rounds = [digits_seg_split("train", round=epoch) for epoch in range(SEG_EPOCHS)]
    gen = torch.Generator().manual_seed(SEED)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, masks, _digits = rounds[epoch]
        x = torch.from_numpy(normalize(np.repeat(images[..., None], 3, axis=-1), SEG_PREPROCESS))
        y = torch.from_numpy(masks.astype(np.int64))
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), SEG_BATCH):
            idx = order[i : i + SEG_BATCH]
            yield x[idx], y[idx]

    # Background is most of every canvas, and at output stride 32 the model cannot draw a stroke's
    # holes: unweighted, "background everywhere" is its best guess. Weighted, it claims the digits' areas.
    weight = torch.ones(len(SEG_LABELS))
    weight[0] = SEG_BACKGROUND_WEIGHT

    def loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(scores, target, weight=weight, ignore_index=IGNORE)

    steps = sum((len(r[0]) + SEG_BATCH - 1) // SEG_BATCH for r in rounds)
    with torch.random.fork_rng():  # the head's dropout draws from torch's global generator
        torch.manual_seed(SEED)
        _fit(model, batches, epochs=SEG_EPOCHS, steps=steps, lr=SEG_LR, loss=loss,
             label=f"training the demo segmenter on {SEG_DATA} ({SEG_EPOCHS} epochs)")


def _fit(model: torch.nn.Module, batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]], *,
         epochs: int, steps: int, lr: float, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
         label: str) -> None:
    """SGD (momentum 0.9, Nesterov, weight decay 5e-4) with a one-cycle schedule to ``lr`` over ``steps``."""
    import click
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    with click.progressbar(length=steps, label=label, file=sys.stderr) as bar:
        for epoch in range(epochs):
            for xb, yb in batches(epoch):
                value = loss(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                sched.step()
                bar.update(1)
    model.eval()
