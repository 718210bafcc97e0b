"""The harness-vs-bare-onnxruntime script runs both, interleaved, and prints both (figures come from the script)."""

from __future__ import annotations

import io

from resnet_deploy.benchmarks.harness_overhead import compare


def test_both_loops_measure_the_same_model(demo18_onnx):
    out = io.StringIO()
    results = compare(demo18_onnx, batches=[1, 4], threads=1, rounds=2, duration_s=0.05, warmup_s=0, out=out)
    assert sorted(results) == [1, 4]
    for harness, bare, ratio in results.values():
        assert harness > 0 and bare > 0 and ratio > 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and all("harness" in ln and "bare onnxruntime" in ln for ln in lines)
