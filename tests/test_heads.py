"""Segmentation models and backbones against torchvision, without torchvision (fixture recorded beside it).

``tests/data/torchvision_dense.npz`` (``tools/torchvision_reference.py dense``) holds torchvision's
state_dict layouts, BatchNorm statistics it measured on the scikit-learn photos, its preset's
tensors and its outputs; the weights come from ``tools/seeded_state.py`` on both sides.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dense_fixture import load_reference, resnet50_checkpoint, torchvision_checkpoint

from resnet_deploy import archs
from resnet_deploy.errors import UsageError
from resnet_deploy.heads import AUX_PREFIX, build_backbone, build_segmenter
from resnet_deploy.weights import load_model


@pytest.fixture(scope="module")
def ref() -> dict:
    return load_reference()


@pytest.mark.parametrize("name", ["fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"])
def test_state_dict_keys_and_shapes_are_torchvisions_without_the_aux_head(name, ref):
    ours = {k: list(v.shape) for k, v in build_segmenter(name, num_classes=6).state_dict().items()}
    theirs = {k: s for k, s in ref["keys"][name].items() if not k.startswith(AUX_PREFIX)}
    assert ours == theirs
    assert len(theirs) < len(ref["keys"][name])  # the fixture's checkpoints do carry the aux head


@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50"])
def test_torchvision_checkpoint_gives_torchvisions_outputs(name, ref, tmp_path):
    loaded = load_model(name, torchvision_checkpoint(ref, name, tmp_path / f"{name}.pth"))
    assert (loaded.task, loaded.num_classes, loaded.outputs) == ("segment", 6, ("scores",))
    assert any("aux_classifier" in n for n in loaded.notes)
    with torch.inference_mode():
        out = loaded.model(torch.from_numpy(ref["seg_input"])).numpy()
    want = ref[name]
    assert out.shape == want.shape == (2, 6, *ref["seg_input"].shape[2:])  # at the input size
    rel = np.abs(out - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel
    assert (out.argmax(1) == want.argmax(1)).mean() >= 0.999
    assert len(np.unique(want.argmax(1))) > 1  # the statistics make a non-trivial map


def test_our_dense_preprocessing_is_torchvisions_segmentation_preset(ref):
    """Short side resized (PIL bilinear), no crop, ImageNet mean/std: the tensors torchvision fed its models."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from resnet_deploy.data import normalize, resize_short
    from resnet_deploy.manifest import Preprocess

    photos = load_sample_images().filenames
    assert [p.rsplit("/", 1)[-1] for p in photos] == list(ref["photos"])
    size = int(ref["sizes"][0])
    ours = normalize(np.stack([resize_short(Image.open(p).convert("RGB"), size) for p in photos]),
                     Preprocess(resize=size, crop=0))
    assert ours.shape == ref["seg_input"].shape
    assert np.abs(ours - ref["seg_input"]).max() <= 1e-5


def test_backbone_loads_a_classification_checkpoint_and_gives_intermediate_layer_getters_outputs(ref, tmp_path):
    resnet50_checkpoint(ref, tmp_path / "resnet50.pth")
    loaded = load_model("resnet50", tmp_path / "resnet50.pth", task="backbone")
    assert (loaded.task, loaded.outputs, loaded.num_classes) == ("backbone", archs.STAGES, 0)
    with torch.inference_mode():
        feats = loaded.model(torch.from_numpy(ref["backbone_input"]))
    for name, got in zip(archs.STAGES, feats):
        want = ref[f"backbone_{name}"]
        assert got.shape == want.shape
        assert np.abs(got.numpy() - want).max() / np.abs(want).max() <= 1e-4, name
    subset = load_model("resnet50", tmp_path / "resnet50.pth", task="backbone", outputs=("c5", "c3"))
    assert subset.outputs == ("c3", "c5")


def test_fcn_resnet18_34_are_stride_32_and_upsampled_to_the_input():
    for name in ("fcn_resnet18", "fcn_resnet34"):
        model = build_segmenter(name, num_classes=4)
        x = torch.randn(1, 3, 70, 100)
        with torch.inference_mode():
            assert model(x).shape == (1, 4, 70, 100)
            assert model.backbone.stages(x)[-1].shape[-2:] == (3, 4)  # ceil(70/32), ceil(100/32)
        assert model.classifier[0].in_channels == 512


def test_tasks_from_arch_and_task():
    assert archs.resolve_task("resnet50", None) == ("resnet50", "classify")
    assert archs.resolve_task("resnet18", "segment") == ("fcn_resnet18", "segment")
    assert archs.resolve_task("deeplabv3_resnet50", None) == ("deeplabv3_resnet50", "segment")
    assert archs.resolve_task("resnet50", "backbone") == ("resnet50", "backbone")
    with pytest.raises(ValueError, match="segmentation model"):
        archs.resolve_task("fcn_resnet50", "backbone")
    with pytest.raises(ValueError, match="no default segmentation head"):
        archs.resolve_task("resnet152", "segment")
    with pytest.raises(UsageError, match="distinct names"), pytest.warns(UserWarning, match="untrained"):
        load_model("resnet18", None, task="backbone", outputs=("c6",))
    with pytest.raises(UsageError, match="`outputs`.*backbone"):
        load_model("resnet18", None, outputs=("c2",))
    with pytest.raises(UsageError, match="no classes"):
        load_model("resnet18", None, task="backbone", num_classes=3)


def test_a_checkpoint_of_another_model_is_refused_in_one_line(ref, tmp_path):
    path = torchvision_checkpoint(ref, "fcn_resnet50", tmp_path / "fcn.pth")
    with pytest.raises(UsageError, match="do not fit deeplabv3_resnet50") as err:
        load_model("deeplabv3_resnet50", path)
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="use `num_classes` 6"):
        load_model("fcn_resnet50", path, num_classes=21)


def test_backbone_only_computes_what_it_returns():
    model = build_backbone("resnet18", ("c2",))
    with torch.inference_mode():
        (c2,) = model(torch.randn(1, 3, 64, 64))
    assert c2.shape == (1, 64, 16, 16)
    assert "layer4.0.conv1.weight" in model.state_dict()  # the keys stay torchvision's
