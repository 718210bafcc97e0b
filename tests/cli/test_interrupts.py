"""SIGINT and SIGTERM at any moment: exit 130 (143), one truthful line, no traceback, no abort, no
empty folder left (docs/reliability.md, case 27). Real processes and real signals, bounded in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_deploy.manifest import manifest_path

EXPORT = [sys.executable, "-c", "from resnet_deploy.cli.export import main; main()"]

IMPORT_SCRIPT = """
import os, signal, sys, threading, time
from resnet_deploy.cli import interrupts
interrupts.install()
t0 = time.perf_counter()
threading.Timer(0.1, os.kill, (os.getpid(), signal.{name})).start()
try:
    import modelopt.onnx.quantization  # seconds of nanobind/pybind11 initialisation; the signal lands inside
    print("imported after", time.perf_counter() - t0, flush=True)
    time.sleep(60)
except interrupts.Interrupted as exc:
    print("interrupted", exc.exit_code, "modelopt.onnx.quantization" in sys.modules, flush=True)
"""


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_a_heavy_import_waits_for_the_import(name, code):
    """Interrupted inside modelopt's import, the process once aborted (exit 134, nanobind::python_error)."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT.replace("{name}", name)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("imported after") and float(lines[0].split()[-1]) > 0.1  # it was importing
    assert lines[1] == f"interrupted {code} True"
    assert "terminate called" not in proc.stderr and "Traceback" not in proc.stderr


def _interrupt(args: list[str], *, at_s: float, sig: int, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    time.sleep(at_s)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _check_clean(result: subprocess.CompletedProcess, sig: int) -> list[str]:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 128 + sig, result.stderr[-3000:]
    assert lines and lines[-1].startswith(f"Interrupted ({signal.Signals(sig).name}); "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "terminate called" not in result.stderr
    return lines


@pytest.mark.parametrize("at_s, sig", [(0.3, signal.SIGINT), (1.5, signal.SIGINT), (3.0, signal.SIGTERM),
                                       (6.0, signal.SIGINT)])
def test_int8_interrupted_at_several_moments(demo18_onnx, tmp_path, at_s, sig):
    """From the first imports to the calibration: nothing published, nothing left in the output folder."""
    out = tmp_path / "out"
    out.mkdir()
    result = _interrupt([*EXPORT, "int8", str(demo18_onnx), "--calib-data", "digits", "--calib-count", "64",
                         "--target", "cpu", "-o", str(out / "m.onnx")], at_s=at_s, sig=sig, cwd=tmp_path)
    if result.returncode == 0:
        pytest.skip("finished before the signal")  # a very fast machine
    lines = _check_clean(result, sig)
    assert lines[-1].endswith("nothing was published.")
    assert list(out.iterdir()) == []


def test_pipeline_interrupted_says_what_it_published_and_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "new"
    early = _interrupt([*EXPORT, "pipeline", "-o", str(out), "--calib-count", "32", "--batch", "1",
                        "--duration", "0.1"], at_s=1.0, sig=signal.SIGINT, cwd=tmp_path)
    assert _check_clean(early, signal.SIGINT)[-1].endswith("nothing was published.")
    assert not out.exists()  # the folder the run created, still empty, is gone

    proc = subprocess.Popen([*EXPORT, "pipeline", "-o", str(out), "--calib-count", "32", "--batch", "1",
                             "--duration", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    seen = []
    deadline = time.monotonic() + 600
    assert proc.stderr is not None
    for line in proc.stderr:  # the FP32 stage is published once the FP16 stage starts
        seen.append(line)
        if "FP16 ONNX ..." in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest_out, rest_err = proc.communicate(timeout=180)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, rest_out, "".join(seen) + rest_err)
    last = _check_clean(result, signal.SIGTERM)[-1]
    fp32 = ["resnet18.onnx", "resnet18.onnx.ref.npz", "resnet18.onnx.json"]  # the artifact, PyTorch's answers, the sidecar
    assert last == f"Interrupted (SIGTERM); published {', '.join(str(out / name) for name in fp32)}."
    assert sorted(p.name for p in out.iterdir()) == sorted(fp32)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_work_is_done_never_kills_the_process(demo18_onnx, tmp_path, sig):
    """Once the command has published, Python tears torch and onnxruntime down (seconds), and at
    shutdown it puts each signal's default action back: a signal then killed the process (rc -2)."""
    out = tmp_path / "m.onnx"
    proc = subprocess.Popen([*EXPORT, "int8", str(demo18_onnx), "--calib-data", "digits", "--calib-count", "64",
                             "--target", "cpu", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "gate holds" in line:  # the INT8 graph passed: it is being published, then the process ends
            time.sleep(0.3)
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=180)
    assert proc.returncode in (0, 128 + sig), "".join(seen) + rest  # never killed by the signal (negative)
    assert "Traceback" not in rest
    if proc.returncode:
        assert rest.strip().splitlines()[-1].startswith(f"Interrupted ({signal.Signals(sig).name}); ")
    else:
        assert out.is_file() and manifest_path(out).is_file()
