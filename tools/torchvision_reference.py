"""Record torchvision's own answers, for parity checks against resnet-deploy (run with torchvision installed).

torchvision cannot sit beside the CPU torch this project pins (its C++ ops fail to register), so
this runs in a separate environment that has torch + torchvision, e.g.

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 scikit-learn
    /tmp/tv/bin/python tools/torchvision_reference.py fixtures tests/data/torchvision_reference.npz
    /tmp/tv/bin/python tools/torchvision_reference.py checkpoint /tmp/tv50.pth /tmp/tv50_logits.npz
    /tmp/tv/bin/python tools/torchvision_reference.py dense tests/data/torchvision_dense.npz

``fixtures`` writes the small test fixture: state_dict key names and shapes of every torchvision
ResNet, and the ImageClassification preset's tensors (resize 232 and 256, crop 224) for the real
photos bundled with scikit-learn. ``checkpoint`` writes a torchvision ResNet-50 checkpoint with
non-trivial seeded weights and BatchNorm statistics, and torchvision's logits for those photos
through its own preset; ``tools/check_torchvision_parity.py`` compares an export against them.

``dense`` writes the segmentation and backbone fixture: the state_dict keys and shapes of
``fcn_resnet50/101`` and ``deeplabv3_resnet50/101`` (with their auxiliary heads), the
BatchNorm statistics of ``fcn_resnet50`` and ``deeplabv3_resnet50`` measured on the photos
(one training-mode pass, momentum None) over weights from ``tools/seeded_state.py``, the
SemanticSegmentation preset's tensors at a small size, torchvision's outputs for them, and
``IntermediateLayerGetter``'s ``layer1..layer4`` of a ResNet-50 holding the same trunk. The
weights themselves are not stored: the tests regenerate them from the seed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


SEG_SIZE = 48  # SemanticSegmentation preset's short side for the segmentation fixture
BACKBONE_SIZE = 32  # ... and for the backbone's (one photo: four stage outputs are larger)
SEG_CLASSES = 6


def _seeded(model: torch.nn.Module, stats: dict | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from seeded_state import seeded_state

    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    state = {k: torch.from_numpy(v) for k, v in seeded_state(shapes, stats).items()}
    model.load_state_dict(state, strict=True)


def _bn_stats_from(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """BatchNorm running statistics of one training-mode pass over ``x`` (dropout off), then eval mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
            m.reset_running_stats()
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    with torch.no_grad():
        model(x)
    model.eval()
    return {k: v.numpy().copy() for k, v in model.state_dict().items() if k.endswith((".running_mean", ".running_var"))}


def dense(out: str) -> None:
    from torchvision.models import segmentation
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.transforms._presets import SemanticSegmentation

    torch.set_num_threads(2)
    keys = {}
    for name in ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"):
        m = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=SEG_CLASSES, aux_loss=True)
        keys[name] = {k: list(v.shape) for k, v in m.state_dict().items()}
    seg_t = SemanticSegmentation(resize_size=SEG_SIZE)
    seg_input = torch.stack([seg_t(Image.open(p).convert("RGB")) for p in PHOTOS])
    stats: dict[str, np.ndarray] = {}
    outputs = {}
    for name in ("fcn_resnet50", "deeplabv3_resnet50"):
        model = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=SEG_CLASSES, aux_loss=True)
        _seeded(model)
        measured = _bn_stats_from(model, seg_input)
        for k, v in measured.items():  # the trunks are the same weights on the same photos: the same statistics
            if k in stats:
                assert np.allclose(stats[k], v, rtol=1e-4, atol=1e-5), k
            else:
                stats[k] = v
        with torch.no_grad():
            outputs[name] = model(seg_input)["out"].numpy()
    trunk = torchvision.models.resnet50()
    trunk_state = {k: torch.from_numpy(v) for k, v in
                   _state_of(model.backbone.state_dict(), trunk.state_dict()).items()}
    trunk.load_state_dict(trunk_state, strict=True)
    getter = IntermediateLayerGetter(trunk.eval(), {f"layer{i}": f"c{i + 1}" for i in range(1, 5)})
    bb_t = SemanticSegmentation(resize_size=BACKBONE_SIZE)
    bb_input = bb_t(Image.open(PHOTOS[0]).convert("RGB"))[None]
    with torch.no_grad():
        feats = {k: v.numpy() for k, v in getter(bb_input).items()}
    np.savez_compressed(
        out,
        keys=np.array(json.dumps(keys)),
        stats_keys=np.array(json.dumps([[k, int(v.size)] for k, v in stats.items()])),
        stats=np.concatenate([v.ravel() for v in stats.values()]).astype(np.float32),
        photos=np.array([p.rsplit("/", 1)[-1] for p in PHOTOS]),
        seg_input=seg_input.numpy(), fcn_resnet50=outputs["fcn_resnet50"],
        deeplabv3_resnet50=outputs["deeplabv3_resnet50"],
        backbone_input=bb_input.numpy(), **{f"backbone_{k}": v for k, v in feats.items()},
        sizes=np.array([SEG_SIZE, BACKBONE_SIZE, SEG_CLASSES]),
        versions=np.array(f"torch {torch.__version__}, torchvision {torchvision.__version__}"),
    )
    print(f"wrote {out}: outputs {[v.shape for v in outputs.values()]}, features {[v.shape for v in feats.values()]}, "
          f"{sum(v.size for v in stats.values())} statistics")


def _state_of(backbone: dict, trunk: dict) -> dict[str, np.ndarray]:
    """A classification ResNet's state: the segmentation trunk's tensors, and its ``fc`` from the seed."""
    sys.path.insert(0, str(Path(__file__).parent))
    from seeded_state import seeded_state

    fc = seeded_state({k: list(v.shape) for k, v in trunk.items() if k.startswith("fc.")})
    return {**{k: v.numpy() for k, v in backbone.items()}, **fc}


if __name__ == "__main__":
    {"fixtures": fixtures, "checkpoint": checkpoint, "dense": dense}[sys.argv[1]](*sys.argv[2:])
