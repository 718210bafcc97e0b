"""Session fixtures: the demo model and its exported artifacts, built once per test session under tmp.

The demo model trains once (about 25 s on two cores) into the user cache directory, as it would
for a user; artifacts go to pytest's session tmp folder, never the working directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    warnings.filterwarnings("ignore", message="no --weights given")


@pytest.fixture(scope="session")
def demo18():
    """The demo ResNet-18 (trained on digits:train) as a LoadedModel."""
    from resnet_deploy.weights import load_model

    return load_model("resnet18", "demo")


@pytest.fixture(scope="session")
def demo_fcn18():
    """The demo FCN-ResNet18 (the demo ResNet-18's trunk fine-tuned on digits-seg:train) as a LoadedModel."""
    from resnet_deploy.weights import load_model

    return load_model("fcn_resnet18", "demo")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """A session-wide folder for exported artifacts shared by tests."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def demo18_onnx(demo18, artifacts) -> Path:
    """The demo ResNet-18 exported to FP32 ONNX (with its manifest), gated on digits:eval."""
    from resnet_deploy.data import open_source
    from resnet_deploy.export.onnx import onnx_from_torch

    path = artifacts / "demo18.onnx"
    onnx_from_torch(demo18, path, eval_source=open_source("digits", split="eval"))
    return path


@pytest.fixture(scope="session")
def digits_png(artifacts) -> Path:
    """digits:eval (540 real handwritten digits) as 8x8 grayscale PNG files in class folders 0..9."""
    from PIL import Image

    from resnet_deploy.data import digits_split

    root = artifacts / "digits-png"
    images, labels = digits_split("eval")
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, demo18, digits_png):
    """``resnet-export pipeline`` on the built-in default, evaluated on the held-out digits as PNG files
    (so its artifacts' recorded references are for that folder): the output folder and click's result."""
    from click.testing import CliRunner

    from resnet_deploy.cli.export import cli

    out = tmp_path_factory.mktemp("pipeline") / "out"
    r = CliRunner().invoke(cli, ["pipeline", "-o", str(out), "--eval-data", str(digits_png), "--duration", "0.2",
                                 "--calib-count", "128", "--triton"])
    return out, r


@pytest.fixture(scope="session")
def demo18_uint8_onnx(demo18, artifacts) -> Path:
    """The demo ResNet-18 exported with raw uint8 NHWC RGB input (normalised in the graph), gated on digits:eval."""
    from resnet_deploy.data import open_source
    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch

    path = artifacts / "demo18-uint8.onnx"
    onnx_from_torch(demo18, path, config=OnnxConfig(input_format="uint8"), eval_source=open_source("digits", split="eval"))
    return path


# ------------------------------------------------------------------------------------ fakes vs. real interfaces

STUBS = Path(__file__).resolve().parents[1] / "typings"


def _stub_classes() -> dict[str, dict[str, list[list[str]] | None]]:
    """{class: {member: [parameter lists of each overload] or None for attributes}} from tensorrt-stubs."""
    import ast

    tree = ast.parse((STUBS / "tensorrt_bindings" / "tensorrt.pyi").read_text(encoding="utf-8"))
    classes: dict[str, dict[str, list[list[str]] | None]] = {}

    def walk(body, prefix=""):
        for node in body:
            if isinstance(node, ast.ClassDef):
                members = classes.setdefault(prefix + node.name, {})
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        decorators = {ast.unparse(d) for d in item.decorator_list}
                        if "property" in decorators or any(d.endswith(".setter") for d in decorators):
                            members[item.name] = None
                        else:
                            params = [a.arg for a in item.args.args[1:]]  # without self
                            members.setdefault(item.name, []).append(params)  # type: ignore[union-attr]
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        members[item.target.id] = None
                walk(node.body, prefix + node.name + ".")

    walk(tree.body)
    return classes


@pytest.fixture(scope="session")
def tensorrt_stub_mismatches():
    """A function: the ways a fake ``tensorrt`` namespace differs from tensorrt-stubs (10.13), as lines.

    Every class the fake exposes must exist in the stubs; every public method must exist there
    with the same parameter names in the same order (one overload suffices), every public
    attribute (class level or set in ``__init__``) as an attribute or property; the fake's enum
    namespaces may hold only members the stubs' enum has. ``fake`` (what the tests record) and
    underscore names are the fake's own.
    """
    import ast
    import inspect
    import textwrap
    from types import SimpleNamespace

    stubs = _stub_classes()
    module_names = set((STUBS / "tensorrt" / "__init__.pyi").read_text(encoding="utf-8").split("'"))

    def check(trt) -> list[str]:
        problems = []
        for name, value in vars(trt).items():
            if name == "fake" or name.startswith("_") and name != "__version__":
                continue
            if name == "__version__":  # set by the wheel's __init__.py (tests/data/tensorrt_api), not in the stubs
                continue
            if name not in module_names and name not in stubs:
                problems.append(f"tensorrt.{name}: not in the stubs")
            elif isinstance(value, type):
                problems += [f"{name}.{p}" for p in check_class(name, value)]
            elif isinstance(value, SimpleNamespace):  # an enum
                problems += [f"{name}.{m}: not a member" for m in vars(value) if m not in stubs.get(name, {})]
        return problems

    def check_class(name: str, cls: type) -> list[str]:
        real = stubs.get(name)
        if real is None:
            return [": no such class"]
        problems = []
        instance_attrs = set()
        for klass in cls.__mro__:
            if klass is object or "__init__" not in vars(klass):
                continue
            source = textwrap.dedent(inspect.getsource(vars(klass)["__init__"]))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
                        and isinstance(node.ctx, ast.Store):
                    instance_attrs.add(node.attr)
        members = {m: v for klass in reversed(cls.__mro__[:-1]) for m, v in vars(klass).items()}
        for member in sorted(set(members) | instance_attrs):
            if member.startswith("_") and member != "__init__":
                continue
            value = members.get(member)
            if member == "__init__" and "__init__" not in real:
                problems.append("__init__: TensorRT has no public constructor for it")
            elif member not in real:
                problems.append(f"{member}: not in the stubs")
            elif inspect.isfunction(value):
                params = list(inspect.signature(value).parameters)[1:]
                overloads = real.get(member)
                if overloads is None:
                    problems.append(f"{member}: a method here, an attribute in the stubs")
                elif params not in overloads:
                    problems.append(f"{member}{tuple(params)}: the stubs have {' or '.join(map(str, map(tuple, overloads)))}")
            elif real.get(member) is not None and not isinstance(value, property):
                problems.append(f"{member}: an attribute here, a method in the stubs")
        return problems

    return check


@pytest.fixture
def demo18_fake_plan(tmp_path, demo18_onnx) -> Path:
    """A TensorRT engine's manifest as ``resnet-export trt`` derives it from the demo ONNX (profile 1..8..32,
    version-compatible), beside stand-in bytes: for deployment writers and servers that never open the plan."""
    from resnet_deploy.manifest import BatchRange, manifest_path, read_manifest
    from resnet_deploy.publish import sha256_bytes

    parent = read_manifest(demo18_onnx)
    path = tmp_path / "demo18.fp16.plan"
    path.write_bytes(b"engine bytes stand-in")
    source = {**parent.source, "parent_sha256": parent.source["sha256"], "sha256": sha256_bytes(path.read_bytes())}
    manifest = parent.derive(batch=BatchRange(1, 8, 32), parity=None, precision="fp16", source=source,
                             build={"tensorrt": "10.13.0", "gpu": "NVIDIA H200", "compute_capability": "9.0",
                                    "version_compatible": True},
                             details={**parent.details, "onnx_parity": parent.parity})
    manifest_path(path).write_text(manifest.to_json())
    return path
