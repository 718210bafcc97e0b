"""docs/reliability.md cases that belong to no single module; the others are tested beside their code.

Where each case is tested:
 1 unknown --arch ............... tests/cli/test_export_onnx.py, tests/test_weights.py
 2 resnet18 weights as resnet50 . tests/test_weights.py
 3 head size mismatch ........... tests/test_weights.py, tests/cli/test_export_onnx.py
 4 wrapped / module. checkpoints  tests/test_weights.py
 5 truncated, empty, directory .. tests/test_weights.py
 6 pickle payload ............... tests/test_weights.py
 7 output folder missing/ro ..... tests/test_publish.py, tests/cli/test_export_onnx.py
 8 existing output .............. tests/test_publish.py, tests/export/test_onnx.py, here (CLI)
 9 killed while writing, disk full tests/test_publish.py
10 external data outside folder . here
11 simplifier changes answers ... tests/export/test_onnx.py
12 empty / non-image calibration  tests/test_data.py, tests/calibration/
13 image modes .................. tests/test_data.py
14 decompression bomb ........... tests/test_data.py
15 thousands of images, bounded . here
16 garbage / foreign .plan ...... tests/runtime/test_tensorrt.py
17 engine from another GPU/TRT .. tests/runtime/test_tensorrt.py
18 wrong rank / dtype / size .... tests/runtime/
19 batch above profile max ...... tests/runtime/, tests/export/test_onnx.py
20 NaN/Inf inputs and outputs ... tests/test_parity.py, tests/runtime/
21 accuracy gate missed ......... tests/test_parity.py, tests/export/test_onnx.py, tests/calibration/
22 identical ONNX bytes ......... tests/export/test_onnx.py
23 output not a regular file .... tests/test_publish.py
24 two runs racing for one name . tests/test_publish.py
25 sidecar of another artifact .. here
26 class folders by name ........ here, tests/test_data.py
27 SIGINT/SIGTERM at any moment . tests/cli/test_interrupts.py
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from resnet_deploy.data import open_source
from resnet_deploy.errors import UsageError
from resnet_deploy.export.artifact import load_checked
from resnet_deploy.manifest import Preprocess


def _external_model(folder, location: str):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w],
    )
    path = folder / "model.onnx"
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd", "link.bin"])
def test_external_data_outside_the_model_folder_is_rejected(tmp_path, location):
    os.symlink("/etc/passwd", tmp_path / "link.bin")
    path = _external_model(tmp_path, location)
    with pytest.raises(UsageError, match="points outside the model's folder"):
        load_checked(path)


def test_external_data_inside_the_folder_is_accepted(tmp_path):
    path = _external_model(tmp_path, "w.bin")
    assert load_checked(path).graph.node[0].op_type == "MatMul"


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UsageError, match="not an ONNX model"):
        load_checked(tmp_path / "x.onnx")


def test_thousands_of_images_stream_in_bounded_memory(tmp_path):
    """2,000 images at 224x224 are 1.2 GB as float tensors; streaming holds one batch of 32 (19 MB) at a time."""
    rng = np.random.default_rng(0)
    for i in range(2000):
        Image.new("RGB", (48, 40), tuple(int(v) for v in rng.integers(0, 256, 3))).save(tmp_path / f"{i:04d}.png")
    source = open_source(tmp_path)
    pp = Preprocess(resize=224, crop=224)
    tracemalloc.start()
    seen = 0
    for batch in source.batches(pp, batch_size=32):
        seen += len(batch.as_input("float32", pp))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seen == 2000
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB while streaming"


# ------------------------------------------------------------------------------------ case 25

def _with_foreign_sidecar(model: Path, other: Path, folder: Path) -> Path:
    """A copy of ``model`` with ``other``'s manifest beside it (an INT8 sidecar next to the FP32 model)."""
    import shutil

    from resnet_deploy.manifest import manifest_path

    copy = folder / "model.onnx"
    shutil.copyfile(model, copy)
    shutil.copyfile(manifest_path(other), manifest_path(copy))
    return copy


def test_a_sidecar_of_another_artifact_is_refused_everywhere(demo18_onnx, demo18_uint8_onnx, tmp_path):
    from click.testing import CliRunner

    from resnet_deploy.cli.bench import cli as bench
    from resnet_deploy.cli.export import cli as export
    from resnet_deploy.runtime import open_session

    model = _with_foreign_sidecar(demo18_onnx, demo18_uint8_onnx, tmp_path)
    with pytest.raises(UsageError, match="does not match the sha256 recorded in its manifest"):
        open_session(model)
    commands = [
        (bench, ["onnx", str(model), "--batch", "1", "--duration", "0.1"]),
        (export, ["fp16", str(model), "-o", str(tmp_path / "f.onnx")]),
        (export, ["int8", str(model), "--calib-data", "digits", "-o", str(tmp_path / "i.onnx")]),
        (export, ["trt", str(model), "-o", str(tmp_path / "m.plan")]),
        (export, ["triton", str(model), "-o", str(tmp_path / "repo")]),
        (export, ["deepstream", str(model), "-o", str(tmp_path / "ds")]),
    ]
    for cli, args in commands:
        result = CliRunner().invoke(cli, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, (args, result.output)
        assert lines == [lines[0]] and "does not match the sha256 recorded in its manifest" in lines[0], args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]  # nothing written


def test_verified_digests_are_cached_until_the_file_changes(demo18_onnx, tmp_path, monkeypatch):
    import shutil

    from resnet_deploy import publish
    from resnet_deploy.manifest import manifest_path, read_manifest

    model = tmp_path / "model.onnx"
    shutil.copyfile(demo18_onnx, model)
    shutil.copyfile(manifest_path(demo18_onnx), manifest_path(model))
    assert read_manifest(model) is not None
    calls = []
    real = publish.hashlib.sha256
    monkeypatch.setattr(publish.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        read_manifest(model)  # unchanged: no byte is read again
    assert calls == []
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size; a new mtime
    model.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="does not match the sha256"):
        read_manifest(model)
    assert calls == [1]


# ------------------------------------------------------------------------------------ case 26

def _subset(folder: Path, classes: list[str], root: Path) -> Path:
    import shutil

    for name in classes:
        shutil.copytree(folder / name, root / name)
    return root


def test_a_folder_of_some_classes_is_scored_by_class_name(demo18_onnx, digits_png, tmp_path):
    """Only 3/ and 7/ of the digits: once scored as classes 0 and 1 (11% and 0%); now as 3 and 7."""
    from resnet_deploy.benchmarks.benchmark import measure_accuracy
    from resnet_deploy.manifest import read_manifest
    from resnet_deploy.runtime import open_session

    manifest = read_manifest(demo18_onnx)
    sub = _subset(digits_png, ["3", "7"], tmp_path / "sub")
    with open_session(demo18_onnx) as session:
        got = measure_accuracy(session, open_source(sub).for_model(manifest), manifest.preprocess)
        hits = n = 0  # the same images, scored inside the full folder
        for batch in open_source(digits_png).for_model(manifest).batches(manifest.preprocess, batch_size=64):
            keep = np.isin(batch.labels, [3, 7])
            if keep.any():
                top = session.run(batch.as_input("float32", manifest.preprocess)).argmax(axis=1)
                hits += int((top[keep] == batch.labels[keep]).sum())
                n += int(keep.sum())
    assert got["count"] == n and got["top1"] == pytest.approx(hits / n)
    assert got["top1"] > 0.5  # far from what position-numbered classes gave


def test_a_class_the_model_does_not_know_is_refused_in_one_line(demo18_onnx, digits_png, tmp_path):
    import shutil

    from click.testing import CliRunner

    from resnet_deploy.cli.bench import cli as bench
    from resnet_deploy.cli.export import cli as export

    sub = _subset(digits_png, ["3"], tmp_path / "sub")
    shutil.copytree(digits_png / "7", sub / "cat")
    for cli, args in ((bench, ["onnx", str(demo18_onnx), "--data", str(sub), "--batch", "1", "--duration", "0.1"]),
                      (export, ["int8", str(demo18_onnx), "--calib-data", str(sub), "-o", str(tmp_path / "i.onnx")]),
                      (export, ["fp16", str(demo18_onnx), "--eval-data", str(sub), "-o", str(tmp_path / "f.onnx")])):
        result = CliRunner().invoke(cli, args)
        lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("Note:")]
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and "class 'cat' is not one of the model's 10 classes" in lines[0], result.output
    assert not (tmp_path / "i.onnx").exists() and not (tmp_path / "f.onnx").exists()


# ------------------------------------------------------------------------------------ issue 17, item 5

def test_a_stage_error_names_the_users_files_not_its_work_copies(demo18_onnx, tmp_path):
    """Once: "…/.resnet-deploy-XXXX/fp16.onnx: …" for a file the user never made."""
    import errno

    from resnet_deploy.export.stage import derived_stage

    out = tmp_path / "m.fp16.onnx"
    with pytest.raises(UsageError) as caught:
        with derived_stage(demo18_onnx, out, what="FP16", eval_source=None, overwrite=False) as stage:
            raise UsageError(f"{stage.work / 'fp16.onnx'}: onnxruntime cannot load it "
                             f"(converted from {stage.work / 'parent.onnx'})")
    assert str(caught.value) == f"{out}: onnxruntime cannot load it (converted from {demo18_onnx})"
    with pytest.raises(OSError) as full:
        with derived_stage(demo18_onnx, out, what="FP16", eval_source=None, overwrite=False) as stage:
            raise OSError(errno.ENOSPC, "No space left on device", str(demo18_onnx))  # shutil names the source
    assert full.value.filename == str(out) and full.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no work folder left
