"""torchvision's segmentation and backbone answers (``tests/data/torchvision_dense.npz``), and the checkpoints behind them.

The fixture (``tools/torchvision_reference.py dense``) holds state_dict layouts, BatchNorm
statistics torchvision measured on the scikit-learn photos, its preset's tensors and its outputs;
every other tensor of the checkpoints comes from ``tools/seeded_state.py``, here as there.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "torchvision_dense.npz"


def seeded_state_module():
    spec = importlib.util.spec_from_file_location("seeded_state", ROOT / "tools" / "seeded_state.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_reference() -> dict:
    with np.load(FIXTURE) as z:
        out = {k: z[k] for k in z.files}
    out["keys"] = json.loads(str(out["keys"]))
    flat, stats, at = out.pop("stats"), {}, 0
    for key, n in json.loads(str(out.pop("stats_keys"))):
        stats[key] = flat[at : at + n]
        at += n
    out["stats"] = stats
    return out


def torchvision_checkpoint(ref: dict, name: str, path: Path) -> Path:
    """The state_dict torchvision's ``name`` held when it wrote the fixture (aux head included), saved as .pth."""
    import torch

    shapes = ref["keys"][name]
    stats = {k: v.reshape(shapes[k]) for k, v in ref["stats"].items() if k in shapes}
    torch.save({k: torch.from_numpy(v) for k, v in seeded_state_module().seeded_state(shapes, stats).items()}, path)
    return path


def resnet50_checkpoint(ref: dict, path: Path) -> Path:
    """A torchvision ResNet-50 classification checkpoint holding the fixture's trunk (and a seeded ``fc``)."""
    import torch

    fcn = torchvision_checkpoint(ref, "fcn_resnet50", path.with_suffix(".fcn.pth"))
    trunk = {k.removeprefix("backbone."): v for k, v in torch.load(fcn, weights_only=True).items()
             if k.startswith("backbone.")}
    fc = seeded_state_module().seeded_state({"fc.weight": [1000, 2048], "fc.bias": [1000]})
    torch.save({**trunk, **{k: torch.from_numpy(v) for k, v in fc.items()}}, path)
    return path
