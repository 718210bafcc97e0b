"""ResNets beyond classification: segmentation heads and the trunk as a multi-output backbone.

Module names and state_dict keys are torchvision's, so its checkpoints load with strict keys:

* ``Segmenter``: torchvision's ``_SimpleSegmentationModel`` without the auxiliary head
  (``backbone.*``, ``classifier.*``). The backbone is the ResNet trunk, dilated for the
  ResNet-50/101 models (output stride 8); FCN-ResNet18/34 keep stride 32. The head's scores are
  upsampled bilinearly to the input size: output (N, classes, H, W).
* ``Backbone``: the trunk with torchvision's classification keys (``conv1.*``, ``layer1.*``...;
  a checkpoint's ``fc.*`` is dropped on load), returning the chosen stage outputs ``c2..c5``
  (layer1..layer4), as torchvision's ``IntermediateLayerGetter`` over ``layer1..layer4`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from resnet_deploy import archs
from resnet_deploy.models import ARCHS, ResNet, build_model

#: the auxiliary head torchvision's segmentation checkpoints carry (training only): dropped on load
AUX_PREFIX = "aux_classifier."
#: the classifier's state_dict key whose first dimension is the class count (both heads)
HEAD_KEY = "classifier.4.weight"


class FCNHead(nn.Sequential):
    """torchvision's FCNHead: 3x3 conv to in/4 channels, BN, ReLU, dropout, 1x1 conv to the classes."""

    def __init__(self, in_channels: int, channels: int) -> None:
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU(),
            nn.Dropout(0.1), nn.Conv2d(inter, channels, 1),
        )


class ASPPConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """Image-level features: global average, 1x1 conv, BN, ReLU, spread back over the map."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): 1x1, three dilated 3x3 and the pooling branch, projected."""

    def __init__(self, in_channels: int, rates: Sequence[int] = (12, 24, 36), out_channels: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                                   nn.BatchNorm2d(out_channels), nn.ReLU())]
        branches += [ASPPConv(in_channels, out_channels, rate) for rate in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
                                     nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        import torch

        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(ASPP(in_channels), nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                         nn.ReLU(), nn.Conv2d(256, num_classes, 1))


HEADS: dict[str, type[FCNHead | DeepLabHead]] = {"fcn": FCNHead, "deeplabv3": DeepLabHead}


class Segmenter(nn.Module):
    """Trunk, head, bilinear upsampling of the scores to the input size (torchvision's segmentation models)."""

    def __init__(self, backbone: ResNet, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        scores = self.classifier(self.backbone.stages(x)[-1])
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


class Backbone(ResNet):
    """The ResNet trunk with torchvision's classification keys, returning the stage outputs named in ``outputs``."""

    def __init__(self, arch: str, outputs: Sequence[str] = archs.STAGES) -> None:
        block, layers = ARCHS[arch]
        super().__init__(block, layers, num_classes=None)
        self.outputs = tuple(outputs)
        self._index = [archs.STAGES.index(name) for name in self.outputs]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        feats = self.stages(x, upto=max(self._index) + 1)
        return tuple(feats[i] for i in self._index)


def build_segmenter(name: str, *, num_classes: int = 21) -> Segmenter:
    """An untrained segmentation model of ``name`` (``archs.SEGMENTERS``) in eval mode."""
    if name not in archs.SEGMENTERS:
        raise ValueError(f"unknown segmentation model {name!r} (choose from {', '.join(archs.SEGMENTERS)})")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    arch, head, dilate = archs.SEGMENTERS[name]
    trunk = build_model(arch, num_classes=None, dilate=dilate)
    return Segmenter(trunk, HEADS[head](trunk.channels[-1], num_classes)).eval()


def build_backbone(arch: str, outputs: Sequence[str] = archs.STAGES) -> Backbone:
    """An untrained ResNet trunk of ``arch`` returning ``outputs`` (a non-empty subset of c2..c5, in order)."""
    outputs = tuple(outputs)
    if not outputs or any(o not in archs.STAGES for o in outputs) or len(set(outputs)) != len(outputs):
        raise ValueError(f"backbone outputs must be distinct names from {', '.join(archs.STAGES)}, got {list(outputs)}")
    outputs = tuple(sorted(outputs, key=archs.STAGES.index))
    return Backbone(arch, outputs).eval()
