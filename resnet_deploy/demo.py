"""The built-in demo model: a ResNet trained on the train split of scikit-learn's real digits.

It lets every command run on a fresh machine with no download. Training is deterministic
(seeded, fixed data order) and cached under the user cache directory as safetensors; the
cache file name carries the recipe version, so a changed recipe never reuses old weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.manifest import Preprocess
from resnet_deploy.publish import atomic_path, sha256_file

if TYPE_CHECKING:
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


def cache_dir() -> Path:
    """``$RESNET_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/resnet-deploy``, else ``~/.cache/resnet-deploy``."""
    if env := os.environ.get("RESNET_DEPLOY_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "resnet-deploy"


def trained_model(arch: str) -> tuple[ResNet, str]:
    """The demo ``arch`` trained on digits (eval mode), from the cache or trained now (tens of seconds),
    and the sha256 of its cached weights file. ``weights.load_model(arch, "demo")`` wraps it."""
    from safetensors.torch import load_file, save_file

    from resnet_deploy.models import build_model

    import torch

    path = cache_dir() / f"demo-{arch}-{RECIPE}.safetensors"
    with torch.random.fork_rng():  # seeded initialisation: the same weights on every machine
        torch.manual_seed(SEED)
        model = build_model(arch, num_classes=NUM_CLASSES)
    if path.is_file():
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except Exception:  # a corrupt cache entry is retrained, not trusted
            path.unlink(missing_ok=True)
    if not path.is_file():
        train(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, record=False) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return model.eval(), sha256_file(path)


def train(model) -> None:
    """SGD with momentum and a one-cycle schedule on digits:train, preprocessed as at inference."""
    import click
    import torch

    from PIL import Image

    from resnet_deploy.data import digits_split, normalize, resize_crop, to_rgb8

    x_u8, y = digits_split("train")
    images = np.stack([resize_crop(to_rgb8(Image.fromarray(img)), PREPROCESS) for img in x_u8])
    x = torch.from_numpy(normalize(images, PREPROCESS))
    y = torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = EPOCHS * ((len(x) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    model.train()
    with click.progressbar(length=steps, label=f"training the demo model on digits ({EPOCHS} epochs)",
                           file=sys.stderr) as bar:
        for _ in range(EPOCHS):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), BATCH):
                idx = order[i : i + BATCH]
                xb = x[idx]
                # Random shifts of up to 2 pixels: cheap augmentation that digits need to generalise.
                dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
                loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    model.eval()

