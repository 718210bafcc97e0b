"""resnet-export deepstream on the demo model: files, keys, the variant's gate, measured fidelity, refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from resnet_deploy.cli.export import cli
from resnet_deploy.deploy.nvinfer_keys import problems
from resnet_deploy.deploy.nvinfer_preprocess import NvinferPreprocess, read_properties
from resnet_deploy.manifest import manifest_path


@pytest.fixture(scope="module")
def ds18(demo18_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "ds18"
    result = CliRunner().invoke(cli, ["deepstream", str(demo18_onnx), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_writes_the_folder(ds18):
    out, output = ds18
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config_infer_primary_demo18.txt", "config_infer_primary_demo18_approx.txt",
        "config_infer_secondary_demo18.txt", "demo18.deepstream.onnx", "demo18.deepstream.onnx.json",
        "demo18.onnx", "demo18.onnx.json", "labels.txt"]
    assert "not run on DeepStream" in output
    assert "Nothing here was run on DeepStream or TensorRT" in (out / "README.md").read_text()
    assert (out / "labels.txt").read_text() == "0;1;2;3;4;5;6;7;8;9\n"  # one output layer: one line, ';'-separated


def test_configs_use_only_nvinfer_keys_and_values(ds18):
    out, _ = ds18
    for path in out.glob("config_infer_*.txt"):
        props = read_properties(path)  # raises on any unknown key or invalid value
        assert problems(props) == []
        assert props["network-type"] == "1" and props["infer-dims"] == "3;32;32"
        assert "int8-calib-file" not in props
        onnx_file = props["onnx-file"]
        assert (out / onnx_file).is_file()
        assert props["model-engine-file"] == f"{onnx_file}_b{props['batch-size']}_gpu0_fp32.engine"
    primary = read_properties(out / "config_infer_primary_demo18.txt")
    secondary = read_properties(out / "config_infer_secondary_demo18.txt")
    assert (primary["process-mode"], secondary["process-mode"]) == ("1", "2")
    assert secondary["operate-on-gie-id"] == "1" and secondary["batch-size"] == "16"
    assert (primary["net-scale-factor"], primary["offsets"], primary["output-blob-names"]) == ("1", "0;0;0", "probs")


def test_approximate_config_is_the_scalar_scale_and_costs_what_the_issue_says(ds18):
    """nvinfer's one scale from the mean std: per channel +1.3% (R), -0.9% (G), -0.4% (B) of the true scale."""
    out, _ = ds18
    props = read_properties(out / "config_infer_primary_demo18_approx.txt")
    std, mean = np.array([0.229, 0.224, 0.225]), np.array([0.485, 0.456, 0.406])
    assert float(props["net-scale-factor"]) == pytest.approx(1 / (255 * std.mean()), rel=1e-9)
    assert [float(v) for v in props["offsets"].split(";")] == pytest.approx(255 * mean, rel=1e-6)
    assert props["onnx-file"] == "demo18.onnx" and props["output-blob-names"] == "logits"
    nvinfer = NvinferPreprocess.from_config(out / "config_infer_primary_demo18_approx.txt")
    frame = np.full((32, 32, 3), 250, dtype=np.uint8)  # far from the mean: the scale error shows
    approx = nvinfer.tensor([frame])[0, :, 0, 0]
    exact = (250 / 255 - mean) / std
    assert np.round(100 * (approx / exact - 1), 1).tolist() == [1.3, -0.9, -0.4]  # the issue's figures


def test_variant_is_gated_and_keeps_the_runtime_logits(ds18):
    out, _ = ds18
    manifest = json.loads(manifest_path(out / "demo18.deepstream.onnx").read_text())
    ds = manifest["details"]["deepstream"]
    gate = ds["variant_gate"]
    assert gate["top1_agreement"] == 1.0 and gate["max_rel_diff"] <= 1e-5 and gate["count"] == 540
    assert manifest["output"] == {"name": "probs", "softmax": True, "logits": "logits"}
    rows = ds["fidelity"]
    assert {(r["normalisation"].split()[0], r["data"].split(":")[0]) for r in rows} == {
        ("exact", "digits"), ("approximate", "digits"), ("exact", "photos"), ("approximate", "photos")}
    digits = [r for r in rows if r["data"].startswith("digits")]
    assert all(r["parity"]["count"] == 540 and r["parity"]["top1_drop"] is not None for r in digits)
    assert ds["geometry"]["chosen"] in ("stretch", "pad")


def test_variant_runs_in_onnxruntime_on_nvinfer_input(ds18):
    """The shipped graph on the emulated nvinfer tensor of a real photo: probabilities that sum to one."""
    from sklearn.datasets import load_sample_images

    from resnet_deploy.runtime import open_session

    out, _ = ds18
    nvinfer = NvinferPreprocess.from_config(out / "config_infer_primary_demo18.txt")
    with open_session(out / "demo18.deepstream.onnx") as session:
        probs = session.run(nvinfer.tensor([np.ascontiguousarray(i) for i in load_sample_images().images]))
    assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()


def _copy(src, tmp_path, name="m.onnx", **manifest_changes):
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    manifest = json.loads(manifest_path(src).read_text())
    for key, value in manifest_changes.items():
        section, _, field = key.partition("__")
        if field:
            manifest[section][field] = value
        else:
            manifest[section] = value
    manifest_path(dst).write_text(json.dumps(manifest))
    return dst


@pytest.mark.parametrize("case, words", [
    ("no-manifest", "no manifest beside it"),
    ("synthetic", "only on synthetic random images"),
    ("cpu-int8", "onnxruntime's CPU form"),
    ("uint8", "export it with --input-format float"),
])
def test_refused_in_one_line_exit_2_nothing_written(demo18_onnx, tmp_path, case, words):
    if case == "no-manifest":
        artifact = tmp_path / "bare.onnx"
        shutil.copyfile(demo18_onnx, artifact)
    elif case == "synthetic":
        artifact = _copy(demo18_onnx, tmp_path, parity__data="synthetic random images, batch 1 and 7")
    elif case == "cpu-int8":
        artifact = _copy(demo18_onnx, tmp_path, precision="int8", details__target="cpu")
    else:
        artifact = _copy(demo18_onnx, tmp_path, input__dtype="uint8")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["deepstream", str(artifact), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder, no staging left


def test_existing_output_is_refused_without_overwrite(demo18_onnx, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["deepstream", str(demo18_onnx), "-o", str(out)])
    assert result.exit_code == 2 and "exists; pass" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
