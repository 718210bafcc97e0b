"""GPU acceptance: the checks no CPU-only CI can run, in one command, with every figure in one JSON.

    python tools/gpu_acceptance.py -o acceptance.json

On a CUDA host (with or without TensorRT) it runs, in order:
  1. the ``cuda``-marked tests (cuda-python against the real driver: buffers, copies, events, graphs);
  2. the ``tensorrt``-marked tests, where TensorRT is installed (real build, load, run, inspect);
  3. the PyTorch CUDA FP16 baseline:
     ``resnet-bench torch --device cuda --precision fp16 --channels-last --cuda-graph --batch 1,64,256``.
It writes the host (GPU, compute capability, driver-visible device count, package versions), each
step's command, exit status, duration and test outcomes, and the baseline's report, to one JSON.

It fails loudly (exit 1, one line on stderr, the JSON still written) when no usable GPU is
there, when a marked test is skipped instead of run, or when any step fails or runs out of
time. Nothing GPU-related is ever reported as passed without having run. The whole run is
bounded by ``--budget`` (default 570 s, under the 10 minutes it must fit in on one GPU).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ["--device", "cuda", "--precision", "fp16", "--channels-last", "--cuda-graph", "--batch", "1,64,256"]
PACKAGES = ("torch", "tensorrt", "cuda-python", "cuda-bindings", "onnxruntime-gpu", "numpy")


class AcceptanceFailed(Exception):
    """One line saying what failed."""


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def probe_gpu() -> dict[str, Any]:
    """The first CUDA device as cuda-python and torch see it; AcceptanceFailed when there is none."""
    sys.path.insert(0, str(ROOT))
    from resnet_deploy.errors import DeployError, MissingDependencyError
    from resnet_deploy.runtime import cuda

    try:
        count = cuda.device_count()
    except MissingDependencyError as exc:
        raise AcceptanceFailed(f"no GPU check possible: {exc}") from exc
    if count < 1:
        raise AcceptanceFailed("asked for a GPU, but cuda-python sees no usable CUDA device (driver missing or "
                               "no GPU visible: check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    try:
        props = cuda.device_properties(0)
    except DeployError as exc:
        raise AcceptanceFailed(f"CUDA device 0 cannot be queried: {exc}") from exc
    info: dict[str, Any] = {"device_count": count, "gpu": props.name, "compute_capability": props.compute_capability,
                            "total_memory_bytes": props.total_memory_bytes, "integrated": props.integrated}
    try:
        import torch

        info["torch_cuda"] = bool(torch.cuda.is_available())
        info["torch_cuda_version"] = torch.version.cuda
    except ImportError:
        info["torch_cuda"] = False
    if not info["torch_cuda"]:
        raise AcceptanceFailed(f"cuda-python sees {props.name}, but this torch has no CUDA "
                               f"({info.get('torch_cuda_version') or 'CPU build'}): install a CUDA build of torch")
    return info


def _run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1), env=env)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-4000:]
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        rc, tail = None, (out.decode(errors="replace") if isinstance(out, bytes) else str(out))[-4000:]
    return {"command": command, "returncode": rc, "seconds": round(time.perf_counter() - start, 1), "output_tail": tail}


def _junit(path: Path) -> dict[str, Any]:
    """Outcome of every test in a pytest JUnit XML file."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped: " + (child.get("message") or "")
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "seconds": float(case.get("time", 0)),
                      "outcome": outcome})
    return {"tests": tests, "passed": sum(t["outcome"] == "passed" for t in tests),
            "skipped": sum(t["outcome"].startswith("skipped") for t in tests),
            "failed": sum(t["outcome"] == "failed" for t in tests)}


def run_marked(marker: str, *, timeout: float, work: Path) -> dict[str, Any]:
    """Run the tests marked ``marker``; every one must run and pass (a skip on a GPU host is a failure)."""
    xml = work / f"{marker}.xml"
    step = _run([sys.executable, "-m", "pytest", "-m", marker, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
                timeout=timeout)
    step.update(_junit(xml) if xml.exists() else {"tests": [], "passed": 0, "skipped": 0, "failed": 0})
    if step["returncode"] is None:
        step["error"] = f"the {marker}-marked tests ran out of time ({timeout:.0f} s)"
    elif step["returncode"] != 0 or step["failed"]:
        step["error"] = f"{step['failed']} {marker}-marked test(s) failed"
    elif step["skipped"] or not step["passed"]:
        step["error"] = (f"{step['skipped']} {marker}-marked test(s) were skipped on a GPU host "
                         f"({step['passed']} passed): a skip is not a pass here")
    return step


def run_baseline(arch: str, *, timeout: float, work: Path) -> dict[str, Any]:
    report = work / "torch-cuda-fp16.json"
    bench = "import sys; from resnet_deploy.cli.bench import main; sys.argv[0] = 'resnet-bench'; main()"
    step = _run([sys.executable, "-c", bench, "torch", "--arch", arch, *BASELINE, "--json", str(report)],
                timeout=timeout)
    if report.exists():
        step["report"] = json.loads(report.read_text(encoding="utf-8"))
    if step["returncode"] is None:
        step["error"] = f"the PyTorch CUDA baseline ran out of time ({timeout:.0f} s)"
    elif step["returncode"] != 0 or "report" not in step:
        step["error"] = f"the PyTorch CUDA baseline failed (exit {step['returncode']})"
    return step


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default="gpu-acceptance.json",
              show_default=True, help="The JSON with every figure and outcome.")
@click.option("--arch", default="resnet50", show_default=True, help="ResNet of the PyTorch baseline.")
@click.option("--budget", type=click.FloatRange(min=60), default=570.0, show_default=True,
              help="Seconds for the whole run; each step gets what is left.")
def main(output: Path, arch: str, budget: float) -> None:
    """Run the GPU checks; exit 1 with one line if there is no GPU or anything failed or was skipped."""
    deadline = time.monotonic() + budget
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": _versions(),
                              "steps": {}, "passed": False}
    failures: list[str] = []
    try:
        result["host"] = probe_gpu()
        with tempfile.TemporaryDirectory(prefix="gpu-acceptance-") as tmp:
            work = Path(tmp)
            steps = result["steps"]
            steps["cuda_tests"] = run_marked("cuda", timeout=min(180, deadline - time.monotonic()), work=work)
            if importlib.util.find_spec("tensorrt") is not None:
                steps["tensorrt_tests"] = run_marked("tensorrt", timeout=min(300, deadline - time.monotonic() - 120),
                                                     work=work)
            else:
                steps["tensorrt_tests"] = {"not_run": "TensorRT is not installed on this host"}
            steps["torch_cuda_fp16"] = run_baseline(arch, timeout=deadline - time.monotonic(), work=work)
            failures = [step["error"] for step in steps.values() if step.get("error")]
    except AcceptanceFailed as exc:
        failures = [str(exc)]
    result["failures"] = failures
    result["passed"] = not failures
    result["seconds"] = round(budget - (deadline - time.monotonic()), 1)
    output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if failures:
        click.echo(f"gpu acceptance FAILED: {'; '.join(failures)} (details: {output})", err=True)
        sys.exit(1)
    click.echo(f"gpu acceptance passed in {result['seconds']} s on {result['host']['gpu']} "
               f"(sm_{result['host']['compute_capability'].replace('.', '')}): {output}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
