"""A real torch-free install: a fresh venv with the built wheel and its `cpu` extra only (numpy, Pillow, click,
the CPU onnxruntime), in which `resnet-bench onnx` measures parity against the recorded PyTorch reference
of a pipeline-exported artifact on real digit PNGs, and the documented example application classifies them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from resnet_deploy.cli.bench import cli as bench_cli

REPO = Path(__file__).resolve().parents[1]
FAST = ["--batch", "1", "--iterations", "10", "--warmup", "0", "--threads", "2"]


def _tool():
    spec = importlib.util.spec_from_file_location("check_install_resolution", REPO / "tools" / "check_install_resolution.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def torch_free(tmp_path_factory) -> Path:
    """The venv's bin folder: resnet-deploy's wheel with `[cpu]`, installed from the package index."""
    root = tmp_path_factory.mktemp("torch-free")
    wheel = _tool().build_wheel(root)
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{wheel}[cpu]"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return bin_dir


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_the_venv_has_no_torch_nor_the_toolchain(torch_free, tmp_path):
    r = _run(torch_free, "python", "-c", "import torch", cwd=tmp_path)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    listed = _run(torch_free, "python", "-m", "pip", "list", "--format", "json", cwd=tmp_path)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "onnxruntime" in names and "resnet-deploy" in names
    assert not names & {"torch", "onnx", "onnxsim", "onnxscript", "nvidia-modelopt", "onnxruntime-gpu", "scikit-learn"}


def test_bench_in_the_venv_matches_the_workstation_run_against_torch(torch_free, pipeline_run, digits_png, tmp_path):
    out, r = pipeline_run
    assert r.exit_code == 0, r.output
    artifact = out / "resnet18.int8-cpu.onnx"
    free = _run(torch_free, "resnet-bench", "onnx", str(artifact), "--data", str(digits_png), *FAST, "--max-drop", "1",
                "--json", str(tmp_path / "free.json"), cwd=tmp_path)
    assert free.returncode == 0, free.stdout + free.stderr
    parity_line = next(line for line in free.stdout.splitlines() if line.startswith("parity vs"))
    assert "pytorch, recorded (resnet18.int8-cpu.onnx.ref.npz, 540 samples)" in parity_line
    (tmp_path / "free.txt").write_text(free.stdout)  # the README's example output comes from this run
    here = CliRunner().invoke(bench_cli, ["onnx", str(artifact), "--data", str(digits_png), *FAST, "--reference",
                                          "torch", "--json", str(tmp_path / "torch.json")])
    assert here.exit_code == 0, here.output
    recorded = json.loads((tmp_path / "free.json").read_text())["parity"]
    torch_ref = json.loads((tmp_path / "torch.json").read_text())["parity"]
    assert recorded["reference_kind"] == "recorded" and torch_ref["reference_kind"] == "torch"
    for key in ("top1_agreement", "top1_drop", "top1_ref", "top1", "count"):
        assert recorded[key] == torch_ref[key], key
    # every logit kept (540 x 10 is inside the budget): the logit figures agree too
    assert recorded["max_abs_diff"] == pytest.approx(torch_ref["max_abs_diff"], rel=1e-5)


def test_bench_in_the_venv_exits_1_on_a_missed_max_drop_and_2_on_a_changed_reference(torch_free, pipeline_run,
                                                                                     digits_png, tmp_path):
    import onnx
    from onnx import numpy_helper

    out, _ = pipeline_run
    # A damaged copy of the artifact (class 0's logit raised): the recorded reference stays PyTorch's.
    model = onnx.load(str(out / "resnet18.onnx"))
    bias = next(t for t in model.graph.initializer if t.name.endswith("fc.bias"))
    values = numpy_helper.to_array(bias).copy()
    values[0] += 50.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    bad = tmp_path / "resnet18.onnx"  # its own name: the manifest names its reference file by it
    onnx.save(model, str(bad))
    shutil.copy(out / "resnet18.onnx.ref.npz", tmp_path / "resnet18.onnx.ref.npz")
    sidecar = json.loads((out / "resnet18.onnx.json").read_text())
    sidecar["source"]["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()  # the sidecar describes this file
    (tmp_path / "resnet18.onnx.json").write_text(json.dumps(sidecar))
    missed = _run(torch_free, "resnet-bench", "onnx", str(bad), "--data", str(digits_png), *FAST,
                  "--max-drop", "1", cwd=tmp_path)
    assert missed.returncode == 1, missed.stdout + missed.stderr
    assert re.search(r"failed its accuracy gate .*top-1 drop \d+\.\d\d points > 1\.00", missed.stderr)

    ref = tmp_path / "resnet18.onnx.ref.npz"
    data = bytearray(ref.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ref.write_bytes(bytes(data))
    tampered = _run(torch_free, "resnet-bench", "onnx", str(bad), "--data", str(digits_png), *FAST,
                    cwd=tmp_path)
    assert tampered.returncode == 2
    lines = tampered.stderr.strip().splitlines()
    assert len(lines) == 1 and "the recorded reference was changed; refusing it" in lines[0], tampered.stderr


def test_without_a_reference_speed_is_measured_and_one_line_says_parity_was_not_checked(torch_free, pipeline_run,
                                                                                       tmp_path):
    from PIL import Image

    out, _ = pipeline_run
    other = tmp_path / "other"  # not the data the reference was recorded on
    (other / "3").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 200, np.uint8), "L").save(other / "3" / "a.png")
    r = _run(torch_free, "resnet-bench", "onnx", str(out / "resnet18.int8-cpu.onnx"), "--data", str(other), *FAST,
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "img/s" in r.stdout
    lines = [line for line in r.stdout.splitlines() if line.startswith("parity")]
    assert len(lines) == 1 and lines[0].startswith("parity: not checked (torch is not installed and the "
                                                   "recorded reference is for other data"), lines


def test_export_commands_and_the_digits_data_name_the_extra_in_one_line(torch_free, pipeline_run, tmp_path):
    out, _ = pipeline_run
    for args in (["resnet-export", "onnx", "--arch", "resnet18", "-o", str(tmp_path / "x.onnx")],
                 ["resnet-bench", "onnx", str(out / "resnet18.int8-cpu.onnx"), "--data", "digits", *FAST]):
        r = _run(torch_free, *args, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "pip install 'resnet-deploy[export]'" in lines[0], r.stderr


def test_the_documented_example_application_classifies_the_same_pngs(torch_free, pipeline_run, digits_png, tmp_path):
    text = (REPO / "docs" / "embedding.md").read_text(encoding="utf-8")
    code = text.split("## An example application", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    app = tmp_path / "classify_images.py"
    app.write_text(code)
    out, _ = pipeline_run
    images = sorted(digits_png.rglob("*.png"))
    r = _run(torch_free, "python", str(app), str(out / "resnet18.int8-cpu.onnx"), *map(str, images), "--threads", "2",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(images) == 540
    right = sum(line.split(": ", 1)[1].split(" ", 1)[0] == Path(line.split(": ", 1)[0]).parent.name for line in lines)
    assert right / len(lines) >= 0.97  # the pipeline's top-1 on these images is 99.44%
