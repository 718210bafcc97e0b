"""The session-overhead script runs end to end (its figures come from the real ResNet-50 run, not from here)."""

from __future__ import annotations

import re



def test_session_overhead_prints_every_caller_and_a_verdict(demo18_onnx, run_script):
    rc, out = run_script("session_overhead.py", "--model", demo18_onnx, "--batch", "4", "--threads", "1",
                         "--rounds", "3", "--calls", "1")
    assert rc in (0, 1), out  # 1 = over the limit; on a 32x32 model the fixed per-call cost weighs more
    assert "onnxruntime cpu, 1 threads" in out and "batch 4, 3 interleaved rounds x 1 calls" in out
    rows = re.findall(r"^(bare InferenceSession\.run|Session\.run.*?|bare .*?noise floor\))\s+([\d.]+)\s+([\d.]+)\s+"
                      r"([+-][\d.]+)%$", out, flags=re.M)
    assert [r[0].split(" (")[0] for r in rows] == ["bare InferenceSession.run", "Session.run", "Session.run",
                                                   "bare InferenceSession.run again"]
    assert float(rows[0][3]) == 0.0 and all(float(r[1]) > 0 for r in rows)
    assert re.search(r"^check_input alone: \d+ us per call", out, flags=re.M)
    assert re.search(r"^Session\.run overhead [+-][\d.]+% \((within|OVER) the 3% limit", out, flags=re.M)


def test_int8_cpu_speed_calibrates_times_and_measures_memory(demo18_onnx, run_script):
    rc, out = run_script("int8_cpu_speed.py", "--model", demo18_onnx, "--calib-count", "16", "--rounds", "1",
                         "--duration", "0.05", "--memory-targets", "cpu", "--memory-count", "16")
    assert rc in (0, 1), out  # 1 = under the 3x speed-up: a 32x32 model is not what the figure is about
    assert re.search(r"^calibrated: 16 images, entropy, batch \d+", out, re.M)
    assert re.search(r"^onnxruntime cpu, batch 8, 2 threads, 1 rounds: FP32 [\d.]+ img/s, INT8 [\d.]+ img/s, "
                     r"speedup [\d.]+x", out, re.M)
    assert re.search(r"^calibration cpu: 16 images at 224x224, entropy, batch \d+, \d+ s, peak RSS \d+ MiB", out, re.M)
