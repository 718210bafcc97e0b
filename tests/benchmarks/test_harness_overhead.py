"""The harness-vs-bare-onnxruntime script runs both, interleaved, and prints both (figures come from the script)."""

from __future__ import annotations

import re



def test_both_loops_measure_the_same_model(demo18_onnx, run_script):
    rc, out = run_script("harness_overhead.py", "--model", demo18_onnx, "--batch", "1,4", "--threads", "1",
                         "--rounds", "2", "--duration", "0.05", "--warmup", "0")
    assert rc in (0, 1), out  # 1 = more than 3% apart: timing noise on a 50 ms run, not a failure here
    rounds = re.findall(r"^batch (\d) round (\d): harness ([\d.]+) img/s, bare onnxruntime ([\d.]+) img/s", out, re.M)
    assert [(b, r) for b, r, *_ in rounds] == [("1", "1"), ("1", "2"), ("4", "1"), ("4", "2")]
    assert all(float(h) > 0 and float(b) > 0 for *_, h, b in rounds)
    medians = re.findall(r"^batch (\d): harness ([\d.]+) img/s, bare onnxruntime loop ([\d.]+) img/s \(medians\); "
                         r"median per-round harness/bare ([\d.]+)", out, re.M)
    assert [m[0] for m in medians] == ["1", "4"] and all(float(m[3]) > 0 for m in medians)
    assert re.search(r"^largest difference [\d.]+% \((within|NOT within) 3%\)$", out, re.M)


def test_bad_batch_list_is_a_usage_error(run_script):
    rc, out = run_script("harness_overhead.py", "--batch", "1,x")
    assert rc == 2 and "comma-separated batch sizes" in out
