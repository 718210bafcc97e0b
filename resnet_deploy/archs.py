"""The ResNet family as data, without torch: the one table of arch names and their shapes.

``models.py`` builds the networks from it, the CLIs offer its names as ``--arch`` choices, and
``weights.guess_arch`` recognises checkpoints by it. A new arch is one row here (with a
``tests/data`` reference of torchvision's keys for it, if torchvision has it).
"""

from __future__ import annotations

#: arch -> (residual block, blocks per stage); torchvision's ResNet definitions
ARCHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
ARCH_NAMES: tuple[str, ...] = tuple(ARCHS)
