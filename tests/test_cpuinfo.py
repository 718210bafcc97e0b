"""CPU feature reading and the INT8 kernel family, on this machine and on fake /proc/cpuinfo trees of real CPUs."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from resnet_deploy.cpuinfo import FAMILIES, SATURATING_U8S8, HostCpu, check_int8_host, cpu_model, host_cpu

# The flags lines of real CPUs, cut to what matters plus some neighbours (as /proc/cpuinfo lists them).
X86 = {
    # Skylake-SP: AVX-512 without VNNI, the CPU the issue measured saturation on
    "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz": ("fpu sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl",
                                                "x86-64-avx2"),
    "Intel(R) Core(TM) i7-4790 CPU @ 3.60GHz": ("fpu sse4_2 avx avx2 fma", "x86-64-avx2"),  # Haswell
    "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz": ("sse4_2 avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni",
                                                "x86-64-vnni"),  # Cascade Lake
    "12th Gen Intel(R) Core(TM) i7-12700": ("sse4_2 avx2 avx_vnni", "x86-64-vnni"),  # Alder Lake: AVX-VNNI, no AVX-512
    "Intel(R) Xeon(R) Platinum 8480+": ("avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx_vnni amx_tile "
                                        "amx_int8 amx_bf16", "x86-64-vnni"),  # Sapphire Rapids
    "AMD EPYC 7R13 Processor": ("sse4_2 avx avx2 fma", "x86-64-avx2"),  # Zen 3: no AVX-512, no VNNI
    "Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz": ("sse4_1 sse4_2 avx", "x86-64-sse"),  # Sandy Bridge: no AVX2
}
ARM = {
    "orin": ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
             "aarch64-dotprod"),
    "graviton3": ("fp asimd asimddp sve i8mm bf16 svei8mm", "aarch64-i8mm"),
    "cortex-a57": ("fp asimd evtstrm aes pmull sha1 sha2 crc32", "aarch64-neon"),
}


def fake(root: Path, text: str) -> Path:
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(text)
    return root


@pytest.mark.parametrize("model", X86)
def test_x86_families(tmp_path, model):
    flags, family = X86[model]
    root = fake(tmp_path, f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    cpu = host_cpu(root, machine="x86_64")
    assert (cpu.arch, cpu.model, cpu.family) == ("x86_64", model, family)
    assert set(cpu.flags) <= set(flags.split()) and "fpu" not in cpu.flags and "sse4_2" not in cpu.flags


@pytest.mark.parametrize("board", ARM)
def test_arm_families(tmp_path, board):
    features, family = ARM[board]
    root = fake(tmp_path, f"processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: {features}\nCPU part\t: 0xd42\n")
    cpu = host_cpu(root, machine="aarch64")
    assert cpu.family == family and ("asimddp" in cpu.flags) == ("asimddp" in features.split())


def test_this_machine_and_no_proc(tmp_path):
    cpu = host_cpu()
    assert cpu.model == cpu_model()
    if platform.system() == "Linux" and cpu.arch in ("x86_64", "aarch64"):
        assert cpu.family in FAMILIES
    assert host_cpu(tmp_path, machine="x86_64") == HostCpu(arch="x86_64")  # nothing readable: unknown, not a guess


SKYLAKE = HostCpu("x86_64", "Intel Xeon Gold 6148", ("avx2", "avx512bw", "avx512dq", "avx512f", "avx512vl"),
                  "x86-64-avx2")
CASCADE = HostCpu("x86_64", "Intel Xeon Gold 6248", ("avx2", "avx512_vnni", "avx512bw"), "x86-64-vnni")


def record(valid_for, variant="v"):
    return {"variant": variant, "valid_for": list(valid_for), "build_host": {"family": "x86-64-vnni"}}


def test_fit_by_family():
    everywhere = record(FAMILIES)
    vnni_only = record(set(FAMILIES) - SATURATING_U8S8, "u8s8")
    assert check_int8_host(everywhere, SKYLAKE).ok and check_int8_host(vnni_only, CASCADE).ok
    bad = check_int8_host(vnni_only, SKYLAKE)
    assert not bad.ok and "\n" not in bad.message
    assert "x86-64-avx2" in bad.message and "saturate" in bad.message and "u8s8" in bad.message
    # A manifest from before the CPU was recorded: those builds had 8-bit weights.
    assert not check_int8_host(None, SKYLAKE).ok and check_int8_host(None, CASCADE).ok
    # An unreadable host: fine for an artifact exact everywhere (with a message strict mode uses), not otherwise.
    unknown = HostCpu("riscv64")
    assert check_int8_host(everywhere, unknown).ok and check_int8_host(everywhere, unknown).message
    assert not check_int8_host(vnni_only, unknown).ok
