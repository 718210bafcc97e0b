"""The ResNet family matches torchvision's state_dict keys and shapes exactly (fixture recorded from torchvision)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_deploy.models import ARCHS, BasicBlock, Bottleneck, build_model

REFERENCE = Path(__file__).parent / "data" / "torchvision_reference.npz"


@pytest.fixture(scope="module")
def torchvision_keys() -> dict[str, dict[str, list[int]]]:
    with np.load(REFERENCE) as z:
        return json.loads(str(z["keys"]))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_state_dict_keys_and_shapes_are_torchvisions(arch, torchvision_keys):
    model = build_model(arch)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == torchvision_keys[arch]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_output_shape_and_residual_blocks(arch):
    model = build_model(arch, num_classes=7)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    block, layers = ARCHS[arch]
    assert type(model.layer3[0]) is block
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == layers
    assert model.fc.in_features == 512 * block.expansion


def test_residual_add_is_real():
    """Zeroing a block's last BN leaves exactly relu(identity): the skip connection carries the input."""
    for block, planes in ((BasicBlock, 64), (Bottleneck, 16)):
        b = block(64, planes).eval()
        last_bn = b.bn2 if block is BasicBlock else b.bn3
        torch.nn.init.zeros_(last_bn.weight)
        x = torch.randn(1, 64, 8, 8)
        with torch.no_grad():
            assert torch.equal(b(x), torch.relu(x))


def test_unknown_arch_and_bad_classes():
    with pytest.raises(ValueError, match="resnet18, resnet34"):
        build_model("resnet5")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", num_classes=0)


def test_the_torch_free_arch_table_is_the_model_table_and_the_cli_choices():
    import click

    from resnet_deploy.archs import ARCH_NAMES
    from resnet_deploy.archs import ARCHS as TABLE
    from resnet_deploy.cli.bench import cli as bench
    from resnet_deploy.cli.export import cli as export

    assert list(ARCHS) == list(TABLE) == list(ARCH_NAMES)
    for name, (block, layers) in TABLE.items():
        assert ARCHS[name] == ({"basic": BasicBlock, "bottleneck": Bottleneck}[block], list(layers))
    from resnet_deploy.archs import MODEL_NAMES, SEGMENTERS

    choices = {(tool, cmd.name): tuple(p.type.choices) for tool, group in (("bench", bench), ("export", export))
               for cmd in group.commands.values() for p in cmd.params if p.name in ("arch", "ref_arch", "archs")}
    # the CPU table times classifiers; every other --arch takes the segmentation models too
    assert choices.pop(("bench", "cpu-table")) == ARCH_NAMES
    assert len(choices) >= 5 and set(choices.values()) == {MODEL_NAMES}  # export onnx, pipeline; bench trt, onnx, torch
    assert MODEL_NAMES == ARCH_NAMES + tuple(SEGMENTERS)
    assert all(isinstance(p.type, click.Choice) for g in (bench, export) for c in g.commands.values()
               for p in c.params if p.name in ("arch", "ref_arch", "archs"))
