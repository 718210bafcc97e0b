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

#: what an artifact computes: class logits, per-pixel class scores at the input size, or a trunk's stage outputs
TASKS: tuple[str, ...] = ("classify", "segment", "backbone")
#: a backbone's named outputs: the outputs of layer1..layer4 (strides 4, 8, 16, 32)
STAGES: tuple[str, ...] = ("c2", "c3", "c4", "c5")

#: segmentation model -> (trunk arch, head, dilated layer2..layer4). FCN heads on ResNet-18/34 at output
#: stride 32 (jetson-inference's FCN-ResNet18); torchvision's fcn_* and deeplabv3_* at output stride 8.
SEGMENTERS: dict[str, tuple[str, str, tuple[bool, bool, bool]]] = {
    "fcn_resnet18": ("resnet18", "fcn", (False, False, False)),
    "fcn_resnet34": ("resnet34", "fcn", (False, False, False)),
    "fcn_resnet50": ("resnet50", "fcn", (False, True, True)),
    "fcn_resnet101": ("resnet101", "fcn", (False, True, True)),
    "deeplabv3_resnet50": ("resnet50", "deeplabv3", (False, True, True)),
    "deeplabv3_resnet101": ("resnet101", "deeplabv3", (False, True, True)),
}
#: every name ``--arch`` takes where a task can be chosen: the ResNets, then the segmentation models
MODEL_NAMES: tuple[str, ...] = ARCH_NAMES + tuple(SEGMENTERS)


def resolve_task(arch: str, task: str | None) -> tuple[str, str]:
    """(model name, task) for ``arch`` and an optional ``task``; ValueError where they disagree.

    A segmentation name says its task; a ResNet name is a classifier unless ``task`` says
    ``backbone`` (its trunk) or ``segment`` (its FCN head, ``fcn_<arch>``).
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    if arch in SEGMENTERS:
        if task not in (None, "segment"):
            raise ValueError(f"{arch} is a segmentation model; it has no task {task!r}")
        return arch, "segment"
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (choose from {', '.join(MODEL_NAMES)})")
    if task == "segment":
        if f"fcn_{arch}" not in SEGMENTERS:
            choices = ", ".join(n for n, row in SEGMENTERS.items() if row[0] == arch)
            raise ValueError(f"{arch} has no default segmentation head; name one as the arch ({choices})")
        return f"fcn_{arch}", "segment"
    return arch, task or "classify"
