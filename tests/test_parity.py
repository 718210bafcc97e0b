"""Parity figures and gates; NaN or Inf never passes (docs/reliability.md, promise 4, cases 20 and 21)."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.errors import GateError
from resnet_deploy.parity import FP16_GATE, FP32_GATE, INT8_GATE, Gate, ParityAccumulator


def _acc(ref, out, labels=None):
    acc = ParityAccumulator("test")
    acc.update(np.asarray(ref, np.float32), np.asarray(out, np.float32), labels)
    return acc.result()


def test_identical_logits_pass_every_gate():
    ref = np.random.default_rng(0).standard_normal((50, 10)).astype(np.float32)
    labels = ref.argmax(1)
    p = _acc(ref, ref, labels)
    assert p.top1_agreement == 1.0 and p.max_abs_diff == 0.0 and p.top1 == p.top1_ref == 1.0
    assert p.top1_drop == 0.0 and p.cosine_min == pytest.approx(1.0)
    for gate in (FP32_GATE, FP16_GATE, INT8_GATE):
        p.check(gate, what="x")


def test_figures_are_computed_not_assumed():
    ref = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 2], [2, 0, 1]], np.float32)
    out = np.array([[3, 1, 0], [2, 0, 1], [1, 0, 2], [0, 1, 2]], np.float32)  # rows 1 and 3 change class
    labels = np.array([0, 1, 2, 0])
    p = _acc(ref, out, labels)
    assert p.top1_ref == 1.0 and p.top1 == 0.5 and p.top1_drop == 50.0 and p.top1_agreement == 0.5
    assert p.max_abs_diff == 2.0 and p.max_rel_diff == pytest.approx(2 / 3)
    with pytest.raises(GateError, match=r"top-1 drop 50.00 points > 1.00"):
        p.check(INT8_GATE, what="the INT8 ONNX")


def test_nan_or_inf_outputs_never_pass():
    ref = np.eye(4, dtype=np.float32)
    out = ref.copy()
    out[2, 0] = np.nan
    out[3, 1] = np.inf
    p = _acc(ref, out, np.arange(4))
    assert p.nonfinite == 2
    assert "2 outputs contain NaN or Inf" in p.failures(Gate())
    with pytest.raises(GateError, match="NaN or Inf"):
        p.check(Gate(), what="x")


def test_drop_gate_needs_labels():
    ref = np.eye(3, dtype=np.float32)
    assert _acc(ref, ref).failures(INT8_GATE) == ["top-1 drop gate needs labelled data"]


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((100, 10)).astype(np.float32)
    out = ref + 0.3 * rng.standard_normal((100, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 100)
    acc = ParityAccumulator("test")
    for i in range(0, 100, 7):
        acc.update(ref[i : i + 7], out[i : i + 7], labels[i : i + 7])
    assert acc.result() == _acc(ref, out, labels)
