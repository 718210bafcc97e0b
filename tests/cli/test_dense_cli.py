"""``resnet-bench`` on segmentation and backbone artifacts: the task's parity in the tables and the JSON,
its gates, timing at the tuned size, and the refusals (mixed tasks, an mIoU gate without masks, Triton
and DeepStream configurations of a segmenter)."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_sample_images

from resnet_deploy.benchmarks.harness import input_shape
from resnet_deploy.benchmarks.report import schema_problems
from resnet_deploy.cli.bench import cli
from resnet_deploy.cli.export import cli as export_cli
from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
from resnet_deploy.runtime import open_session
from resnet_deploy.weights import load_model

QUICK = ["--warmup", "0", "--iterations", "3", "--threads", "1", "--batch", "1"]
SMALL = OnnxConfig(resize=64, max_size=256, max_batch=4)


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for p in load_sample_images().filenames:  # china.jpg, flower.jpg: real photos, 427 x 640
        shutil.copy(p, folder)
    return folder


def _export(tmp_path_factory, name, arch, weights=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained: "no weights given"
        loaded = load_model(arch, weights, **kwargs)
    return onnx_from_torch(loaded, tmp_path_factory.mktemp(name) / f"{name}.onnx", config=SMALL).path


@pytest.fixture(scope="module")
def fcn(tmp_path_factory):
    return _export(tmp_path_factory, "fcn", "resnet18", task="segment", num_classes=5)


@pytest.fixture(scope="module")
def fcn_other(tmp_path_factory):
    """The same FCN with its last convolution's weights negated: another model, same shapes."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = load_model("resnet18", None, task="segment", num_classes=5).model.state_dict()
    state["classifier.4.weight"] = -state["classifier.4.weight"]
    ckpt = tmp_path_factory.mktemp("ckpt") / "other.pth"
    torch.save(state, ckpt)
    return _export(tmp_path_factory, "other", "fcn_resnet18", str(ckpt))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return _export(tmp_path_factory, "trunk", "resnet18", task="backbone", outputs=("c4", "c5"))


def test_segmentation_report_holds_pixel_agreement_and_scores_in_the_documented_schema(fcn, photos, tmp_path):
    out = tmp_path / "r.json"
    r = _run("onnx", str(fcn), *QUICK[:-2], "--batch", "1,2", "--data", str(photos), "--min-agreement", "99.9",
             "--json", str(out))
    assert r.exit_code == 0, r.output
    assert "no masks, no mIoU" in r.output and "pixel agreement 100.0000%" in r.output
    report = json.loads(out.read_text())
    assert schema_problems(report) == [] and report["task"] == "segment"
    par = report["parity"]
    assert par["reference_kind"] == "torch" and par["count"] == 2 and par["pixel_agreement"] == 1.0
    assert par["miou_drop"] is None and set(par["outputs"]) == {"scores"}
    assert par["outputs"]["scores"]["max_rel_diff"] < 1e-3
    # A classifier's schema is not a segmenter's: the check tells them apart by `task`.
    assert schema_problems({**report, "task": "classify"})


def test_another_model_misses_the_pixel_agreement_gate(fcn, fcn_other, photos, tmp_path):
    out = tmp_path / "r.json"
    r = _run("onnx", str(fcn_other), *QUICK, "--data", str(photos), "--reference", str(fcn),
             "--min-agreement", "99", "--json", str(out))
    assert r.exit_code == 1, r.output
    assert "failed its accuracy gate" in r.output and "pixel agreement" in r.output
    assert not out.exists()


def test_mIoU_gate_without_masks_and_mixed_tasks_are_refused_before_any_timing(fcn, backbone, photos):
    r = _run("onnx", str(fcn), *QUICK, "--data", str(photos), "--max-drop", "1")
    assert r.exit_code == 2 and "has no masks" in r.output and "img/s" not in r.output
    r = _run("onnx", str(backbone), *QUICK, "--data", str(photos), "--min-agreement", "99")
    assert r.exit_code == 2 and "a backbone's parity" in r.output
    r = _run("compare", str(fcn), str(backbone), *QUICK)
    assert r.exit_code == 2 and "compare models of one task" in r.output


def test_backbone_compare_reports_each_output_against_pytorch(backbone, photos, tmp_path):
    out = tmp_path / "c.json"
    r = _run("compare", str(backbone), *QUICK, "--data", str(photos), "--json", str(out))
    assert r.exit_code == 0, r.output
    assert "max rel diff" in r.output and "min cos" in r.output
    (report,) = json.loads(out.read_text())["reports"]
    assert schema_problems(report) == [] and report["task"] == "backbone"
    outputs = report["parity"]["outputs"]
    assert set(outputs) == {"c4", "c5"} and all(o["cosine_min"] > 0.9999 for o in outputs.values())


def test_dense_models_are_timed_at_the_tuned_size_without_data(fcn):
    with open_session(fcn) as s:
        assert s.manifest.size.opt == (64, 85)
        assert input_shape(s, 2) == (2, 3, 64, 85)
        r = _run("onnx", str(fcn), *QUICK[:-2], "--batch", "2")
        assert r.exit_code == 0, r.output
        x = np.zeros(input_shape(s, 1), np.float32)
        assert s.run(x).shape == (1, 5, 64, 85)


def test_triton_and_deepstream_refuse_a_segmenter_in_one_line(fcn, photos, tmp_path):
    for args in (["triton", str(fcn)], ["deepstream", str(fcn), "--eval-data", str(photos), "--no-photos"]):
        r = CliRunner().invoke(export_cli, [*args, "-o", str(tmp_path / args[0])])
        assert r.exit_code == 2, r.output
        assert r.output.strip().endswith("takes classifiers so far (docs/tasks.md)") and "segment model" in r.output
        assert not (tmp_path / args[0]).exists()
    r = CliRunner().invoke(export_cli, ["pipeline", "--task", "segment", "--triton", "-o", str(tmp_path / "p")])
    assert r.exit_code == 2 and "for classifiers so far" in r.output and not (tmp_path / "p").exists()
    # a task the arch does not have is one line with --triton too (the task is resolved before the check)
    r = CliRunner().invoke(export_cli, ["pipeline", "--arch", "fcn_resnet18", "--task", "classify", "--triton",
                                        "-o", str(tmp_path / "p")])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        "Error: fcn_resnet18 is a segmentation model; it has no --task 'classify'"]
    assert not (tmp_path / "p").exists()


def test_no_recorded_reference_for_a_segmenter_says_why(fcn, photos):
    r = _run("onnx", str(fcn), *QUICK, "--data", str(photos), "--reference", "recorded")
    assert r.exit_code == 2
    assert "is a segment model; references are recorded for classifiers only" in r.output
