"""The ResNet family (He et al., 2015) with torchvision's module names, state_dict keys and numerics.

Architecture as data: each variant is one row of ``archs.ARCHS`` (torch-free, so the CLIs can
list the names without importing torch); ``ARCHS`` here is that table with the block classes. A
torchvision checkpoint loads with strict keys and gives the same logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from resnet_deploy import archs


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and the residual add (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1) -> None:
        super().__init__()
        if dilation > 1:
            raise ValueError("dilation > 1 is not supported in BasicBlock (ResNet-18/34), as in torchvision")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision's "ResNet v1.5"), 1x1 expand x4, residual add (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


STAGES = ("c2", "c3", "c4", "c5")  # layer1..layer4: strides 4, 8, 16, 32 (less where dilated)


class ResNet(nn.Module):
    """torchvision's ResNet. ``num_classes=None``: the trunk alone (no pooling, no ``fc``), as torchvision's
    segmentation backbones hold it; ``dilate`` replaces the strides of layer2..layer4 with dilation
    (torchvision's ``replace_stride_with_dilation``)."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], *, num_classes: int | None = 1000,
                 dilate: tuple[bool, bool, bool] = (False, False, False)) -> None:
        super().__init__()
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate[2])
        self.channels = tuple(planes * block.expansion for planes in (64, 128, 256, 512))  # c2..c5
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, num_classes)
        # torchvision's initialisation, so an untrained export has the same statistics.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stages(self, x: Tensor, upto: int = 4) -> list[Tensor]:
        """The outputs of layer1..layer``upto`` (c2, c3, ...), computed no further than needed."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[:upto]:
            x = layer(x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(x)[-1]
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
ARCHS: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    name: (BLOCKS[block], list(layers)) for name, (block, layers) in archs.ARCHS.items()
}


def build_model(arch: str, *, num_classes: int | None = 1000,
                dilate: tuple[bool, bool, bool] = (False, False, False)) -> ResNet:
    """An untrained ResNet of ``arch`` in eval mode (``num_classes=None``: the trunk alone). ValueError for an unknown arch."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (choose from {', '.join(ARCHS)})")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    block, layers = ARCHS[arch]
    return ResNet(block, layers, num_classes=num_classes, dilate=dilate).eval()
