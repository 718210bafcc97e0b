"""benchmark() and compare(): accuracy and parity on real digits, gates before timing, the report."""

from __future__ import annotations

import json

import pytest

from resnet_deploy.benchmarks.benchmark import benchmark, compare, measure_accuracy
from resnet_deploy.benchmarks.harness import BenchConfig
from resnet_deploy.benchmarks.report import rank, schema_problems, write_json
from resnet_deploy.benchmarks.specs import OpenOptions, open_model, open_reference, parse_spec
from resnet_deploy.data import ArraySource, digits_split, open_source
from resnet_deploy.errors import GateError, UsageError
from resnet_deploy.parity import Gate

QUICK = BenchConfig(warmup_s=0, iterations=3, batches=(1, 4))
OPTIONS = OpenOptions(threads=1)


@pytest.fixture(scope="module")
def ort18(demo18_onnx):
    return open_model(parse_spec(str(demo18_onnx)), options=OPTIONS)


@pytest.fixture(scope="module")
def digits():
    return open_source("digits", split="eval", count=96)


def untrained(candidate):
    """An untrained ResNet-18 with the demo's head and input: another model entirely."""
    return open_reference("torch:resnet18", candidate=candidate, options=OpenOptions(threads=1, num_classes=10))


def test_report_with_accuracy_and_parity_matches_the_schema(ort18, digits, tmp_path):
    ref = open_reference(None, candidate=ort18, options=OPTIONS)
    report = benchmark(ort18, config=QUICK, source=digits, reference=ref, gate=Gate(min_agreement=1.0, max_drop=0.0),
                       threads=1)
    d = report.to_dict()
    assert [r["batch"] for r in d["runs"]] == [1, 4] and all(r["iterations"] == 3 for r in d["runs"])
    assert d["backend"] == "onnxruntime" and d["precision"] == "fp32" and d["environment"]["threads"] == 1
    # The demo model classifies real held-out digits; the FP32 ONNX answers exactly as PyTorch.
    assert d["accuracy"]["count"] == 96 and d["accuracy"]["top1"] > 0.95
    assert d["parity"]["top1_agreement"] == 1.0 and d["parity"]["top1_drop"] == 0.0
    assert d["parity"]["top1_ref"] == d["accuracy"]["top1"] and d["parity"]["cosine_min"] > 0.9999
    assert d["timing"]["inputs"].startswith("first batch of digits:eval")
    out = write_json(tmp_path / "r.json", d)
    assert schema_problems(json.loads(out.read_text())) == []


def test_missed_gate_fails_before_timing(ort18, digits, monkeypatch):
    wrong = untrained(ort18)
    timed = []
    monkeypatch.setattr("resnet_deploy.benchmarks.benchmark.time_batches", lambda *a, **k: timed.append(1))
    with pytest.raises(GateError, match="top-1 agreement .* < 99.00%"):
        benchmark(ort18, config=QUICK, source=digits, reference=wrong, gate=Gate(min_agreement=0.99))
    assert not timed


def test_gates_need_data_and_a_reference(ort18, digits):
    with pytest.raises(UsageError, match="need `data`"):
        benchmark(ort18, config=QUICK, gate=Gate(max_drop=1.0))
    with pytest.raises(UsageError, match="need a `reference`"):
        benchmark(ort18, config=QUICK, source=digits, gate=Gate(max_drop=1.0))


def test_batch_outside_the_model_range_fails_first(ort18):
    with pytest.raises(UsageError, match="batch 65 outside its range 1..64"):
        benchmark(ort18, config=BenchConfig(batches=(8, 65)))


def test_reference_with_another_head_is_refused(ort18, digits):
    thousand = open_reference("torch:resnet18", candidate=ort18, options=OpenOptions(threads=1, num_classes=1000))
    with pytest.raises(UsageError, match="outputs 10 classes but its reference torch:resnet18 1000"):
        benchmark(ort18, config=QUICK, source=digits, reference=thousand)


def test_accuracy_alone_and_on_unlabelled_data(ort18, digits):
    report = benchmark(ort18, config=QUICK, source=digits, reference=None)
    assert report.parity is None and report.accuracy["top1"] > 0.95 and report.accuracy["top5"] >= report.accuracy["top1"]
    unlabelled = ArraySource(digits_split("eval")[0][:96], None, description="unlabelled digits")
    acc = measure_accuracy(ort18.session, unlabelled, ort18.preprocess, batch_size=32)
    assert acc == {"data": "unlabelled digits (96 samples)", "count": 96, "top1": None, "top5": None}
    assert schema_problems(benchmark(ort18, config=QUICK, source=unlabelled).to_dict()) == []


def test_compare_ranks_and_collects_every_gate_miss(ort18, digits):
    torch18 = open_model(parse_spec("torch:resnet18:demo"), options=OPTIONS)
    ref = open_reference(None, candidate=ort18, options=OPTIONS)
    reports = compare([torch18, ort18], references=[None, ref], config=QUICK, source=digits, threads=1)
    assert [r.model for r in reports] == ["torch:resnet18:demo", str(ort18.label)]
    ranked = rank(reports)
    assert ranked[0].runs[-1].throughput_ips >= ranked[1].runs[-1].throughput_ips
    assert reports[0].accuracy["top1"] == reports[1].accuracy["top1"]
    assert reports[0].parity is None and reports[1].parity["top1_agreement"] == 1.0

    wrong = untrained(ort18)
    with pytest.raises(GateError) as info:
        compare([ort18, torch18], references=[wrong, wrong], config=QUICK, source=digits,
                gate=Gate(min_agreement=0.99))
    assert str(info.value).count("failed its accuracy gate") == 2
