"""The session-overhead benchmark runs end to end (its figures come from the real ResNet-50 run, not from here)."""

from __future__ import annotations

import re

from resnet_deploy.benchmarks.session_overhead import main


def test_session_overhead_prints_every_caller_and_a_verdict(demo18_onnx, capsys):
    rc = main(["--model", str(demo18_onnx), "--batch", "4", "--threads", "1", "--rounds", "3", "--calls", "1"])
    out = capsys.readouterr().out
    assert rc in (0, 1)  # 1 = over the limit; on a 32x32 model the fixed per-call cost weighs more
    assert "onnxruntime cpu, 1 threads" in out and "batch 4, 3 interleaved rounds x 1 calls" in out
    rows = re.findall(r"^(bare InferenceSession\.run|Session\.run.*?|bare .*?noise floor\))\s+([\d.]+)\s+([\d.]+)\s+"
                      r"([+-][\d.]+)%$", out, flags=re.M)
    assert [r[0].split(" (")[0] for r in rows] == ["bare InferenceSession.run", "Session.run", "Session.run",
                                                   "bare InferenceSession.run again"]
    assert float(rows[0][3]) == 0.0 and all(float(r[1]) > 0 for r in rows)
    assert re.search(r"^check_input alone: \d+ us per call", out, flags=re.M)
    assert re.search(r"^Session\.run overhead [+-][\d.]+% \((within|OVER) the 3% limit", out, flags=re.M)
