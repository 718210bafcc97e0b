"""Weights load safely and fail with one line that says what to do (docs/reliability.md, cases 2-6)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from resnet_deploy.errors import UsageError
from resnet_deploy.models import build_model
from resnet_deploy.weights import load_model, state_digest


@pytest.fixture(scope="module")
def r18_state():
    torch.manual_seed(1)
    return build_model("resnet18", num_classes=10).state_dict()


def _same(model, state):
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_plain_wrapped_and_prefixed_checkpoints_load(tmp_path, r18_state):
    variants = {
        "plain.pth": r18_state,
        "wrapped.pth": {"state_dict": r18_state, "epoch": 3},
        "model.pth": {"model": {f"module.{k}": v for k, v in r18_state.items()}},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        loaded = load_model("resnet18", tmp_path / name, num_classes=10)
        assert _same(loaded.model, r18_state), name
        assert len(loaded.weights_sha256) == 64
    save_file({k: v.contiguous() for k, v in r18_state.items()}, tmp_path / "w.safetensors")
    assert _same(load_model("resnet18", tmp_path / "w.safetensors", num_classes=10).model, r18_state)


def test_wrong_arch_summarises_keys_and_names_the_arch(tmp_path, r18_state):
    torch.save(r18_state, tmp_path / "r18.pth")
    with pytest.raises(UsageError) as err:
        load_model("resnet50", tmp_path / "r18.pth", num_classes=10)
    msg = str(err.value)
    assert "missing keys" in msg and "unexpected" in msg and "use `arch` resnet18" in msg
    assert "\n" not in msg


def test_head_mismatch_says_use_num_classes(tmp_path, r18_state):
    torch.save(r18_state, tmp_path / "r18.pth")
    with pytest.raises(UsageError, match="use `num_classes` 10"):
        load_model("resnet18", tmp_path / "r18.pth")


def test_truncated_empty_and_directory(tmp_path, r18_state):
    full = tmp_path / "full.pth"
    torch.save(r18_state, full)
    data = full.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "trunc.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    for name, pattern in (("trunc.pth", "truncated or corrupt"), ("empty.pth", "empty"),
                          ("trunc.safetensors", "safetensors"), ("", "is a directory"), ("nope.pth", "no such")):
        with pytest.raises(UsageError, match=pattern):
            load_model("resnet18", tmp_path / name if name else tmp_path, num_classes=10)


class _Payload:
    """Unpickling this runs os.system: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_without_running(tmp_path, r18_state):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": r18_state, "x": _Payload(str(marker))}, f)
    with pytest.raises(UsageError, match="refused to load"):
        load_model("resnet18", evil, num_classes=10)
    assert not marker.exists()


def test_random_init_is_seeded():
    with pytest.warns(UserWarning, match="untrained"):
        a = load_model("resnet18", None)
    with pytest.warns(UserWarning):
        b = load_model("resnet18", None)
    assert a.weights == "random" and state_digest(a.model) == state_digest(b.model) == a.weights_sha256


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(UsageError, match="resnet18, resnet34, resnet50, resnet101, resnet152"):
        load_model("resnet51", None)


def test_torchvision_weights_fail_clearly_without_torchvision():
    pytest.importorskip("torch")
    try:
        import torchvision  # noqa: F401
    except Exception:
        from resnet_deploy.errors import MissingDependencyError

        with pytest.raises(MissingDependencyError, match="pass its file as `weights`"):
            load_model("resnet50", "torchvision")
    else:
        pytest.skip("torchvision is importable here; the download path needs a network")


def test_same_keys_other_shapes_is_one_line(tmp_path, r18_state):
    state = dict(r18_state)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(UsageError, match=r"weights do not fit resnet18: size mismatch for layer1.0.conv1.weight"):
        load_model("resnet18", tmp_path / "odd.pth", num_classes=10)


SPELLINGS = {  # what a user, a manifest or a spec may write -> (kind, name, label)
    None: ("random", None, "random"),
    "": ("random", None, "random"),
    "random": ("random", None, "random"),
    "demo": ("demo", None, "demo"),
    "torchvision": ("torchvision", "DEFAULT", "torchvision:DEFAULT"),
    "torchvision:IMAGENET1K_V2": ("torchvision", "IMAGENET1K_V2", "torchvision:IMAGENET1K_V2"),
    "torchvision:ResNet50_Weights.IMAGENET1K_V2": ("torchvision", "ResNet50_Weights.IMAGENET1K_V2",
                                                   "torchvision:ResNet50_Weights.IMAGENET1K_V2"),
    "r50.pth": ("file", "r50.pth", "r50.pth"),
    "./demo": ("file", "./demo", "./demo"),  # a file named like a keyword stays a file
    "/models/a:b.safetensors": ("file", "/models/a:b.safetensors", "/models/a:b.safetensors"),
}


@pytest.mark.parametrize("text", list(SPELLINGS), ids=repr)
def test_every_spelling_parses_once_and_round_trips(text):
    from resnet_deploy.benchmarks.specs import parse_spec
    from resnet_deploy.weights import Weights

    kind, name, label = SPELLINGS[text]
    w = Weights.parse(text)
    assert (w.kind, w.name, w.label, str(w)) == (kind, name, label, label)
    assert Weights.parse(w) is w and Weights.parse(w.label) == w and w == label
    # the torch:ARCH:WEIGHTS label the pipeline and resnet-bench write parses back to the same weights
    assert parse_spec(f"torch:resnet18:{w.label}").weights == w
    assert w.data_for("classify") == ("digits" if kind == "demo" else None)
    assert (w.path is None) == (kind != "file")


def test_the_labels_written_load_when_typed_back(tmp_path, r18_state):
    from resnet_deploy.benchmarks.specs import OpenOptions, open_model, parse_spec
    from resnet_deploy.weights import Weights

    # torch:<arch>:random, the pipeline's label for untrained weights, did not load before (a file "random")
    with pytest.warns(UserWarning, match="untrained"):
        opened = open_model(parse_spec("torch:resnet18:random"), options=OpenOptions(image_size=32))
    with opened.session as session, pytest.warns(UserWarning):
        assert opened.spec.weights == "random"
        assert state_digest(session.model) == load_model("resnet18", "random").weights_sha256
    path = tmp_path / "r18.pth"
    torch.save(r18_state, path)
    loaded = load_model("resnet18", str(path), num_classes=10)
    again = load_model("resnet18", Weights.parse(loaded.weights.label), num_classes=10)
    assert loaded.weights == again.weights == str(path) and again.weights_sha256 == loaded.weights_sha256


def test_a_manifest_carries_the_weights_and_their_data(demo18_onnx):
    from resnet_deploy.manifest import read_manifest
    from resnet_deploy.weights import Weights

    manifest = read_manifest(demo18_onnx)
    assert manifest.source["weights"] == "demo"  # the label, as every earlier manifest wrote it
    assert Weights.of(manifest) == Weights("demo") and Weights.of(manifest).data_for("classify") == "digits"


def test_torchvision_weights_of_another_arch_are_refused():
    pytest.importorskip("torchvision", exc_type=ImportError)
    with pytest.raises(UsageError, match="not resnet18's"):
        load_model("resnet18", "torchvision:ResNet50_Weights.IMAGENET1K_V2")
