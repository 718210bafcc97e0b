"""Deterministic non-trivial weights for a state_dict layout, in numpy alone.

The same recipe runs beside torchvision (``tools/torchvision_reference.py dense``) and in the
tests, so a ResNet-50-sized checkpoint is never committed: the fixture holds its key names and
shapes, the BatchNorm statistics torchvision measured on real photos, and torchvision's outputs;
both sides regenerate every other tensor from ``SEED`` and the key's name. Keys with the same
name get the same tensor in any model (a segmentation model's ``backbone.*`` and a trunk's).
"""

from __future__ import annotations

import zlib

import numpy as np

SEED = 16


def seeded_tensor(key: str, shape: list[int], *, batchnorm: bool, seed: int = SEED) -> np.ndarray:
    """The tensor for ``key``: He-normal weights, small biases, BatchNorm scale near 1 (not statistics)."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    if batchnorm and key.endswith(".weight"):
        return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    if batchnorm and key.endswith(".bias"):
        return rng.uniform(-0.2, 0.2, size=shape).astype(np.float32)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
    return rng.uniform(-0.1, 0.1, size=shape).astype(np.float32)


def seeded_state(shapes: dict[str, list[int]], stats: dict[str, np.ndarray] | None = None,
                 seed: int = SEED) -> dict[str, np.ndarray]:
    """Every key of ``shapes`` (name -> shape); ``running_mean``/``running_var`` from ``stats`` where given, else 0/1."""
    stats = stats or {}
    out = {}
    for key, shape in shapes.items():
        module = key.rsplit(".", 1)[0]
        if key.endswith((".running_mean", ".running_var")):
            default = np.zeros if key.endswith("mean") else np.ones
            out[key] = np.asarray(stats[key], dtype=np.float32) if key in stats else default(shape, dtype=np.float32)
        else:
            out[key] = seeded_tensor(key, list(shape), batchnorm=f"{module}.running_mean" in shapes, seed=seed)
    return out
