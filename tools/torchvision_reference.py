"""Record torchvision's own answers, for parity checks against resnet-deploy (run with torchvision installed).

torchvision cannot sit beside the CPU torch this project pins (its C++ ops fail to register), so
this runs in a separate environment that has torch + torchvision, e.g.

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 scikit-learn
    /tmp/tv/bin/python tools/torchvision_reference.py fixtures tests/data/torchvision_reference.npz
    /tmp/tv/bin/python tools/torchvision_reference.py checkpoint /tmp/tv50.pth /tmp/tv50_logits.npz

``fixtures`` writes the small test fixture: state_dict key names and shapes of every torchvision
ResNet, and the ImageClassification preset's tensors (resize 232 and 256, crop 224) for the real
photos bundled with scikit-learn. ``checkpoint`` writes a torchvision ResNet-50 checkpoint with
non-trivial seeded weights and BatchNorm statistics, and torchvision's logits for those photos
through its own preset; ``tools/check_torchvision_parity.py`` compares an export against them.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_images
from torchvision.models import ResNet50_Weights

PHOTOS = load_sample_images().filenames  # china.jpg, flower.jpg: real photos shipped with scikit-learn


def preset_tensors(weights) -> np.ndarray:
    t = weights.transforms()
    return torch.stack([t(Image.open(p).convert("RGB")) for p in PHOTOS]).numpy()


def fixtures(out: str) -> None:
    keys = {}
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        sd = getattr(torchvision.models, arch)().state_dict()
        keys[arch] = {k: list(v.shape) for k, v in sd.items()}
    np.savez_compressed(
        out,
        keys=np.array(json.dumps(keys)),
        photos=np.array([p.rsplit("/", 1)[-1] for p in PHOTOS]),
        preset_232=preset_tensors(ResNet50_Weights.IMAGENET1K_V2),  # Resize(232) + CenterCrop(224)
        preset_256=preset_tensors(ResNet50_Weights.IMAGENET1K_V1),  # Resize(256) + CenterCrop(224)
        versions=np.array(f"torch {torch.__version__}, torchvision {torchvision.__version__}"),
    )


def checkpoint(ckpt: str, out: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    with torch.no_grad():  # trained-looking statistics, so logits are far from uniform
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 1.0)
                m.bias.uniform_(-0.1, 0.1)
    model.eval()
    torch.save(model.state_dict(), ckpt)
    x = torch.from_numpy(preset_tensors(ResNet50_Weights.IMAGENET1K_V2))
    with torch.no_grad():
        logits = model(x).numpy()
    np.savez(out, logits=logits, photos=np.array(PHOTOS),
             versions=np.array(f"torch {torch.__version__}, torchvision {torchvision.__version__}"))
    print(f"wrote {ckpt} and {out}: logits {logits.shape}, max |logit| {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    {"fixtures": fixtures, "checkpoint": checkpoint}[sys.argv[1]](*sys.argv[2:])
