"""The Session contract on a real model: input validation, open_session, lifecycle, topk_labels."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from resnet_deploy.data import open_source, sample_batch
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import read_manifest
from resnet_deploy.runtime import Session, open_session, topk_labels
from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

EXPECTED = r"float32 array of shape \(N, 3, 32, 32\) with N in 1\.\.64"


@pytest.fixture(scope="module")
def session(demo18_onnx):
    with open_session(demo18_onnx, threads=2) as s:
        yield s


@pytest.fixture(scope="module")
def digits_batch(demo18_onnx):
    m = read_manifest(demo18_onnx)
    return sample_batch(open_source("digits"), m.preprocess, "float32", batch_size=16)


def one_line_error(call) -> str:
    with pytest.raises(UsageError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda x: x.astype(np.float64), r"input dtype is float64; this model takes a "),
        (lambda x: x.astype(np.uint8), r"input dtype is uint8; this model takes a "),
        (lambda x: x[0], r"input has shape \(3, 32, 32\); this model takes a "),
        (lambda x: x[:, :, :16], r"input has shape \(16, 3, 16, 32\); this model takes a "),
        (lambda x: x.transpose(0, 2, 3, 1), r"input has shape \(16, 32, 32, 3\); this model takes a "),
        (lambda x: x[:0], r"batch 0 is outside this model's range 1\.\.64; it takes a "),
        (lambda x: np.concatenate([x] * 5), r"batch 80 is outside this model's range 1\.\.64; it takes a "),
        (lambda x: x.tolist(), r"input is a list; this model takes a "),
    ],
    ids=["float64", "uint8", "rank3", "height", "nhwc", "batch0", "batch80", "list"],
)
def test_bad_input_is_one_line_stating_the_expected_shape(session, digits_batch, make, says):
    text = one_line_error(lambda: session.run(make(digits_batch)))
    assert re.fullmatch(says + EXPECTED, text), text


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_flagged_with_where(session, digits_batch, value):
    x = digits_batch.copy()
    x[5, 1, 7, 9] = value
    x[9, 0, 0, 0] = value
    text = one_line_error(lambda: session.run(x))
    assert text.startswith("input contains NaN or Inf (2 values, first in sample 5); this model takes a finite ")
    assert "(N, 3, 32, 32)" in text


def test_huge_finite_values_pass_the_finiteness_check(session, digits_batch):
    # A sum over these overflows to inf; the min/max check must not call that non-finite.
    x = np.full_like(digits_batch, np.finfo(np.float32).max)
    x[:, 0] = -np.finfo(np.float32).max
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(x[:, 1:].sum(dtype=np.float32))
    logits = session.run(x)
    assert logits.shape == (16, 10)


def test_non_contiguous_input_gives_the_contiguous_answer(session, digits_batch):
    flipped = digits_batch[:, ::-1]  # a strided view, e.g. a BGR<->RGB swap
    assert not flipped.flags.c_contiguous
    np.testing.assert_array_equal(session.run(flipped), session.run(np.ascontiguousarray(flipped)))


def test_run_returns_a_new_array_each_call(session, digits_batch):
    a = session.run(digits_batch)
    kept = a.copy()
    session.run(digits_batch[::-1].copy())
    np.testing.assert_array_equal(a, kept)


def test_session_describes_its_input(session):
    assert isinstance(session, Session) and session.backend == "onnxruntime"
    assert (session.input_name, session.input_dtype, session.sample_shape) == ("input", "float32", (3, 32, 32))
    assert (session.min_batch, session.max_batch) == (1, 64)
    assert session.expected_input() == "float32 array of shape (N, 3, 32, 32) with N in 1..64"
    assert session.manifest.arch == "resnet18" and session.labels == [str(i) for i in range(10)]


def test_open_session_picks_the_backend_by_suffix(demo18_onnx, tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        open_session(tmp_path / "missing.onnx")
    other = tmp_path / "model.bin"
    shutil.copy(demo18_onnx, other)
    with pytest.raises(UsageError, match=r"cannot tell the backend from the suffix \(use \.onnx, \.plan or \.engine\)"):
        open_session(other)
    with pytest.raises(UsageError, match="unknown backend 'tflite'"):
        open_session(demo18_onnx, backend="tflite")
    with open_session(other, backend="onnxruntime") as s:  # an explicit backend overrides the suffix
        assert isinstance(s, OnnxRuntimeSession) and s.manifest is not None  # from the ONNX metadata


def test_context_manager_closes_and_close_is_idempotent(demo18_onnx, digits_batch):
    with open_session(demo18_onnx) as s:
        s.run(digits_batch)
    s.close()
    with pytest.raises(UsageError, match="the session is closed"):
        s.run(digits_batch)


def test_topk_labels_is_the_softmax_ranking():
    logits = np.array([[1.0, 3.0, 2.0, -1.0], [0.0, 0.0, 5.0, 0.0]], np.float32)
    got = topk_labels(logits, topk=2, labels=["a", "b", "c", "d"])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    assert [name for name, _ in got[0]] == ["b", "c"] and [name for name, _ in got[1]][0] == "c"
    assert got[0][0][1] == pytest.approx(p[0, 1]) and got[0][1][1] == pytest.approx(p[0, 2])
    # ties keep index order; unlabelled models name classes by index; k is capped at the class count
    unlabelled = topk_labels(logits[1:], topk=9, labels=None)[0]
    assert [name for name, _ in unlabelled] == ["2", "0", "1", "3"]
    assert sum(prob for _, prob in unlabelled) == pytest.approx(1.0)
