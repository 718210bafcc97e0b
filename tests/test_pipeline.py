"""``resnet-export pipeline`` end to end on the built-in default (demo ResNet-18, digits)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from resnet_deploy.benchmarks.report import schema_problems
from resnet_deploy.cli.export import cli
from resnet_deploy.pipeline import artifact_names


def test_pipeline_publishes_every_artifact_and_reports_it(pipeline_run):
    out, r = pipeline_run
    assert r.exit_code == 0, r.output
    names = artifact_names("resnet18")
    for key in ("onnx", "fp16", "int8", "int8-cpu"):
        assert (out / names[key]).is_file() and (out / f"{names[key]}.json").is_file()
    report = json.loads((out / "report.json").read_text())
    listed = [row["artifact"] for row in report["summary"]]
    assert listed == ["torch:resnet18:demo", *(names[k] for k in ("onnx", "fp16", "int8", "int8-cpu"))]
    for row in report["summary"]:
        assert row["top1"] >= 0.97 and row["throughput_ips"] > 0 and row["p50_ms"] > 0
    for row in report["summary"][1:]:  # every artifact against PyTorch, on the held-out digits
        assert row["top1_drop"] <= 1.0 and row["top1_agreement"] >= 0.99
    for bench in report["benchmarks"]:
        assert schema_problems(bench) == []
    md = (out / "report.md").read_text()
    assert all(names[k] in md for k in ("onnx", "fp16", "int8", "int8-cpu"))
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("resnet18.onnx", "resnet18.int8-cpu.onnx", "img/s"):
        assert name in r.output  # the summary table on stdout


def test_every_artifact_carries_the_recorded_reference_of_the_evaluation_data(pipeline_run, digits_png):
    from resnet_deploy.data import open_source
    from resnet_deploy.manifest import read_manifest
    from resnet_deploy.recorded import read_recorded

    out, r = pipeline_run
    assert r.exit_code == 0, r.output
    names = artifact_names("resnet18")
    entries = []
    for key in ("onnx", "fp16", "int8", "int8-cpu"):
        manifest = read_manifest(out / names[key])
        recorded, _ = read_recorded(out / names[key], manifest)  # the file beside it, its sha256 checked
        assert (out / f"{names[key]}.ref.npz").is_file() and recorded.count == 540
        entries.append(manifest.reference)
    assert all(e == entries[0] for e in entries)  # one recording, copied to every derived artifact
    assert entries[0]["data_digest"] == open_source(digits_png).digest()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_pipeline_reports_the_engine_stage_as_skipped_with_the_reason(pipeline_run):
    out, r = pipeline_run
    stages = {s["name"]: s for s in json.loads((out / "report.json").read_text())["stages"]}
    assert stages["TensorRT engines"]["status"] == "skipped"
    assert "pip install 'resnet-deploy[tensorrt-cu12]'" in stages["TensorRT engines"]["note"]
    assert not list(out.glob("*.plan"))


def test_pipeline_refuses_to_overwrite_before_any_work(pipeline_run):
    out, _ = pipeline_run
    before = (out / "resnet18.onnx").stat().st_mtime_ns
    r = CliRunner().invoke(cli, ["pipeline", "-o", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert (out / "resnet18.onnx").stat().st_mtime_ns == before


def test_pipeline_adds_a_triton_repository_of_every_artifact(pipeline_run):
    out, r = pipeline_run
    assert r.exit_code == 0, r.output
    names = artifact_names("resnet18")
    models = sorted(p.name for p in (out / "triton").iterdir() if p.is_dir())
    assert models == sorted(names[k].rsplit(".", 1)[0].replace(".", "_") for k in ("onnx", "fp16", "int8", "int8-cpu"))
    assert "kind: KIND_CPU" in (out / "triton" / "resnet18_int8-cpu" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU" in (out / "triton" / "resnet18_int8" / "config.pbtxt").read_text()


def test_pipeline_needs_eval_data_for_other_weights(tmp_path):
    r = CliRunner().invoke(cli, ["pipeline", "--weights", "random", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "Error: --eval-data is required for weights other than demo (random)" in r.output


def test_pipeline_flags_figures_other_processes_disturbed(pipeline_run):
    """As resnet-bench does (benchmarks.report.disturbed_note): said in report.md, report.json and on stderr."""
    from resnet_deploy.benchmarks.harness import DISTURBED_CORES

    out, r = pipeline_run
    report = json.loads((out / "report.json").read_text())
    busy = [run for bench in report["benchmarks"] for run in bench["runs"]
            if (run.get("other_load_cores") or 0) > DISTURBED_CORES]
    flagged = [n for n in report["notes"] if n.startswith("other processes were busy during")]
    assert len(flagged) == (1 if busy else 0), (busy, report["notes"])
    if busy:
        assert f"{len(busy)} of {sum(len(b['runs']) for b in report['benchmarks'])} runs" in flagged[0]
        assert f"Note: {flagged[0]}" in (out / "report.md").read_text() and flagged[0] in r.output
