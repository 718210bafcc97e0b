"""CPU INT8 that holds its gate on every CPU: 7-bit weights by default, the manifest's CPU record, the runtime check.

The host is faked where a test needs a CPU without VNNI (``cpuinfo.host_cpu`` replaced); what such a
CPU really computes is measured under emulation by benchmarks/cpu_int8_portability.py.
"""

from __future__ import annotations

import json
import shutil
import warnings

import onnx
import pytest
from click.testing import CliRunner

from resnet_deploy import cpuinfo
from resnet_deploy.calibration.cpu import check_cpu_qdq
from resnet_deploy.calibration.gate import Int8Config
from resnet_deploy.data import open_source
from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.export.int8 import int8_from_onnx
from resnet_deploy.parity import Gate
from resnet_deploy.runtime import open_session

SKYLAKE = cpuinfo.HostCpu("x86_64", "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz",
                          ("avx2", "avx512bw", "avx512dq", "avx512f", "avx512vl"), "x86-64-avx2")
CASCADE = cpuinfo.HostCpu("x86_64", "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
                          ("avx2", "avx512_vnni", "avx512bw", "avx512dq", "avx512f", "avx512vl"), "x86-64-vnni")


def on_host(monkeypatch, host: cpuinfo.HostCpu) -> None:
    monkeypatch.setattr(cpuinfo, "host_cpu", lambda *a, **k: host)


@pytest.fixture(scope="module")
def full_range(demo18_onnx, calib_cache, tmp_path_factory):
    """The demo model with 8-bit weights (the pre-fix graph, fast only where VNNI is), and the 7-bit default
    calibrated on the same data in the same cache, so the cache must tell them apart. A loose gate: on a CPU
    without VNNI the 8-bit graph saturates while it is gated, and these tests are about what it records."""
    out = tmp_path_factory.mktemp("full-range")
    logs, results = {}, {}
    for variant in ("u8s8-w7", "u8s8"):
        log: list[str] = []
        results[variant] = int8_from_onnx(
            demo18_onnx, out / f"{variant}.onnx", calib_source=open_source("digits", split="train", count=64),
            config=Int8Config(target="cpu", cpu_variant=variant, gate=Gate(max_drop=10.0), max_kept=0,
                              cache_dir=calib_cache),
            eval_source=open_source("digits", split="eval", count=100), log=log.append)
        logs[variant] = log
    return results, logs


def test_the_manifest_says_what_the_gate_assumed(int8_demo):
    m = int8_demo["cpu"].manifest
    rec = m.details["cpu"]
    assert rec["variant"] == "u8s8-w7" and rec["weights_bits"] == 7
    assert rec["valid_for"] == list(cpuinfo.FAMILIES)  # exact on every kernel family, without VNNI too
    host = cpuinfo.host_cpu()
    assert rec["build_host"] == {**host.to_dict(), "onnxruntime": rec["build_host"]["onnxruntime"]}
    assert rec["build_host"]["onnxruntime"] == (m.versions.get("onnxruntime") or m.versions.get("onnxruntime-gpu"))
    assert m.details["weights"] == "int8 symmetric per output channel, 7 bits (-64..64)"
    assert m.details["structure"]["weight_max_abs"] == 64  # calibrated weights fill the 7-bit range, no more


def test_seven_bit_weights_are_checked(int8_demo):
    """The placement check refuses a graph whose weights leave 7 bits, and names the layer."""
    from onnx import numpy_helper

    model = onnx.load(str(int8_demo["cpu"].path))
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == producer[conv.input[1]].input[0])
    arr = numpy_helper.to_array(weight).copy()
    arr.flat[0] = 100
    weight.CopyFrom(numpy_helper.from_array(arr, weight.name))
    with pytest.raises(DeployError, match=f"{conv.name} weight reaches 100, beyond 7 bits"):
        check_cpu_qdq(model)
    assert check_cpu_qdq(model, variant="u8s8")["weight_max_abs"] == 100  # an 8-bit variant may


def test_variants_are_told_apart_by_the_cache(full_range):
    results, logs = full_range
    assert not any("cached" in line for line in logs["u8s8"])  # same data, model and method: still calibrated anew
    assert results["u8s8"].manifest.details["structure"]["weight_max_abs"] == 127
    assert results["u8s8-w7"].manifest.details["structure"]["weight_max_abs"] == 64
    assert results["u8s8"].manifest.details["cpu"]["valid_for"] == [
        f for f in cpuinfo.FAMILIES if f not in cpuinfo.SATURATING_U8S8]


def test_the_default_opens_quietly_on_a_cpu_without_vnni(int8_demo, monkeypatch):
    on_host(monkeypatch, SKYLAKE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_session(int8_demo["cpu"].path, strict_cpu=True) as s:
            assert s.int8_host.ok and s.int8_host.host.family == "x86-64-avx2"


def test_an_8_bit_artifact_warns_on_a_cpu_without_vnni_and_strict_refuses(full_range, monkeypatch):
    path = full_range[0]["u8s8"].path
    on_host(monkeypatch, SKYLAKE)
    with pytest.warns(RuntimeWarning, match=r"x86-64-avx2: its uint8 x int8 kernels saturate") as caught:
        open_session(path).close()
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    with pytest.raises(UsageError, match="refused: strict_cpu"):
        open_session(path, strict_cpu=True)
    on_host(monkeypatch, CASCADE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_session(path, strict_cpu=True).close()


def test_a_manifest_from_before_the_record_counts_as_8_bit(full_range, monkeypatch, tmp_path):
    src = full_range[0]["u8s8"].path
    old = tmp_path / "old.onnx"
    shutil.copy(src, old)
    data = json.loads((src.parent / f"{src.name}.json").read_text())
    del data["details"]["cpu"]
    (tmp_path / "old.onnx.json").write_text(json.dumps(data))
    on_host(monkeypatch, SKYLAKE)
    with pytest.warns(RuntimeWarning, match="built before CPU checks"):
        open_session(old).close()


def test_bench_says_so_next_to_the_parity(full_range, monkeypatch):
    from resnet_deploy.cli.bench import cli

    path = str(full_range[0]["u8s8"].path)
    on_host(monkeypatch, SKYLAKE)
    quick = ["--warmup", "0", "--iterations", "2", "--threads", "1", "--batch", "8"]
    r = CliRunner().invoke(cli, ["onnx", path, *quick, "--data", "digits", "--count", "32"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    parity = next(i for i, ln in enumerate(lines) if ln.startswith("parity vs"))
    assert "x86-64-avx2 CPU, outside the families" in lines[parity + 1]
    assert "Note:" in r.stderr and "saturate" in r.stderr  # the runtime's warning, once
    r = CliRunner().invoke(cli, ["onnx", path, *quick, "--strict-cpu"])
    assert r.exit_code == 2 and "refused: strict_cpu" in r.stderr
