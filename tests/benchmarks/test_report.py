"""The report schema check, ranking and tables."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from resnet_deploy.benchmarks.harness import Run
from resnet_deploy.benchmarks.report import Report, compare_rows, markdown, rank, runs_rows, schema_problems


def report(name: str, ips_by_batch: dict[int, float]) -> Report:
    runs = [Run(batch=b, iterations=10, wall_s=b * 10 / ips, latencies_ms=np.full(10, 1e3 * b / ips))
            for b, ips in ips_by_batch.items()]
    return Report(backend="onnxruntime", device="cpu", model=name, precision="fp32", runs=runs,
                  environment={"cpu": "x", "threads": 2, "versions": {}})


def test_schema_problems_names_each_departure():
    good = report("a", {1: 10.0, 8: 40.0}).to_dict()
    assert schema_problems(good) == []
    bad = copy.deepcopy(good)
    del bad["runs"][1]["latency_ms"]["p99"]
    bad["runs"][0]["iterations"] = 10.0
    bad["parity"] = {"reference": "torch"}
    bad["environment"]["threads"] = "2"
    problems = schema_problems(bad)
    assert "report.runs[1].latency_ms.p99: missing" in problems
    assert "report.runs[0].iterations: float, expected integer" in problems
    assert "report.parity.top1_agreement: missing" in problems
    assert "report.environment.threads: str, expected integer" in problems
    assert schema_problems({**good, "runs": []}) == ["report.runs: expected a non-empty list"]


def test_rank_by_throughput_at_the_largest_shared_batch():
    a, b, c = report("a", {1: 50.0, 8: 100.0}), report("b", {1: 10.0, 8: 300.0}), report("c", {1: 90.0, 8: 200.0})
    assert [r.model for r in rank([a, b, c])] == ["b", "c", "a"]
    headers, rows = compare_rows([a, b, c], baseline=a)
    assert headers[:6] == ["#", "model", "backend", "precision", "img/s b1", "img/s b8"]
    assert [r[1] for r in rows] == ["b", "c", "a"]
    assert [r[headers.index("x a")] for r in rows] == [3.0, 2.0, 1.0]
    assert rows[0][headers.index("p50 ms b8")] == pytest.approx(1e3 * 8 / 300)


def test_runs_table_and_markdown():
    headers, rows = runs_rows(report("a", {1: 12.345, 8: 123.45}))
    assert headers[:2] == ["batch", "img/s"] and rows[1][1] == pytest.approx(123.45)
    md = markdown(headers, rows)
    lines = md.splitlines()
    assert lines[0].startswith("| batch | img/s |") and lines[1].startswith("|---:|---:|")
    assert "| 8 | 123.5 |" in lines[3] and "| 1 | 12.3 |" in lines[2]


def test_int8_speed_notes_say_when_int8_is_not_faster_and_why():
    """The one verdict compare and the pipeline print: decided on the figures given, explained by the host's ISA."""
    import dataclasses

    from resnet_deploy.benchmarks.report import int8_speed_notes
    from resnet_deploy.cpuinfo import HostCpu

    avx2 = HostCpu("x86_64", "Xeon", ("avx2", "avx512bw"), "x86-64-avx2")
    vnni = HostCpu("x86_64", "EPYC", ("avx2", "avx512_vnni"), "x86-64-vnni")

    def int8(name, ips, target):
        return dataclasses.replace(report(name, ips), precision="int8", int8_target=target)

    fp32, fp16 = report("m.onnx", {1: 100.0, 8: 400.0}), dataclasses.replace(report("h.onnx", {8: 300.0}), precision="fp16")
    fast = int8("fast.onnx", {1: 90.0, 8: 1200.0}, "cpu")  # judged at the largest batch: 3x
    slow = int8("slow.onnx", {1: 150.0, 8: 380.0}, "cpu")
    trt = int8("trt.onnx", {8: 200.0}, "tensorrt")
    torch = dataclasses.replace(report("torch:resnet18", {8: 10.0}), backend="pytorch")
    notes = int8_speed_notes([torch, fp32, fp16, fast, slow, trt], host=avx2)
    assert len(notes) == 2
    assert notes[0].startswith("INT8 slow.onnx is slower than FP32 m.onnx here (0.95x at batch 8)")
    assert "no VNNI" in notes[0] and "vpmaddubsw" in notes[0]
    assert notes[1].startswith("INT8 trt.onnx is slower than FP32 m.onnx here (0.50x") and "--target cpu" in notes[1]
    level = int8("level.onnx", {8: 420.0}, "cpu")  # within 10% of FP32: no faster
    (note,) = int8_speed_notes([fp32, level], host=vnni)
    assert "no faster than FP32" in note and "x86-64-vnni" in note
    assert int8_speed_notes([fp32, fast], host=avx2) == [] and int8_speed_notes([slow], host=avx2) == []
