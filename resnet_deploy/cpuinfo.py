"""The host CPU as INT8 sees it: its model, the instructions that change INT8 numerics, and its kernel family.

Standard library only (``/proc/cpuinfo`` and ``platform``): the runtime reads it on devices
without torch or onnx, the quantizer records it in the manifest, benchmarks name the CPU with it.

Why the family matters: onnxruntime's CPU kernels (MLAS) for uint8 x int8 (U8S8) products pick
an instruction by CPU, and not every one computes the same thing:

* ``x86-64-vnni``: AVX-512 VNNI (``vpdpbusd``), AVX-VNNI, AMX. Each product is summed in 32 bits: exact.
* ``x86-64-avx2``: AVX2 or AVX-512BW without VNNI. ``vpmaddubsw`` adds each pair of u8 x s8
  products into a *saturating* 16-bit integer before widening: 255 x 127 x 2 = 64,770 is clipped
  to 32,767. Only graphs whose weights stay within 7 bits (|w| <= 64, so 2 x 255 x 64 = 32,640)
  are computed exactly.
* ``x86-64-sse``: no AVX2. The Linux build widens u8 and s8 to 16 bits and multiplies with
  ``pmaddwd`` (32-bit sums): exact.
* ``aarch64-i8mm`` / ``aarch64-dotprod`` / ``aarch64-neon``: ``usmmla``/``ummla``, ``udot``/
  ``sdot``, or widening multiplies: all accumulate in 32 bits, exact.

This mirrors MLAS's own choice (its ``platform.cpp``): on x86 a CPU with the AVX-512 core set
(F, BW, DQ, VL) uses the AVX-512 kernels and counts as VNNI only with ``avx512_vnni``; without
AVX-512BW, ``avx_vnni`` decides. ``docs/cpu-int8.md`` has the detail and what was measured.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: /proc/cpuinfo flags that change which INT8 kernel runs (x86 "flags", Arm "Features")
X86_INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni", "amx_int8",
                  "amx_tile", "avx_vnni_int8")
ARM_INT8_FLAGS = ("asimd", "asimddp", "i8mm", "sve", "svei8mm")

#: every kernel family, with what it does to U8S8 products
FAMILIES = {
    "x86-64-vnni": "x86-64 with AVX-512 VNNI, AVX-VNNI or AMX (32-bit sums)",
    "x86-64-avx2": "x86-64 with AVX2 or AVX-512 but no VNNI (vpmaddubsw: saturating 16-bit pair sums)",
    "x86-64-sse": "x86-64 without AVX2 (16-bit products, 32-bit sums)",
    "aarch64-i8mm": "aarch64 with i8mm (usmmla/ummla, 32-bit sums)",
    "aarch64-dotprod": "aarch64 with dot product (udot/sdot, 32-bit sums)",
    "aarch64-neon": "aarch64 without dot product (widening multiplies, 32-bit sums)",
}
#: families whose U8S8 kernels saturate when an int8 weight exceeds 7 bits
SATURATING_U8S8 = frozenset({"x86-64-avx2"})
_AVX512_CORE = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}


@dataclass(frozen=True)
class HostCpu:
    """What ``host_cpu`` read: ``family`` is None where the CPU could not be read (not Linux, or no /proc)."""

    arch: str  # platform.machine(), normalised: "x86_64" | "aarch64" | what the platform says
    model: str | None = None
    flags: tuple[str, ...] = ()  # the INT8-relevant flags present, sorted
    family: str | None = None

    @property
    def known(self) -> bool:
        return self.family is not None

    def describe(self) -> str:
        """One phrase for messages: ``AMD EPYC 9654 (x86-64-vnni: avx2, avx512bw, avx512_vnni, ...)``."""
        flags = ", ".join(self.flags) or "no INT8 extensions"
        return f"{self.model or self.arch} ({self.family or 'unknown INT8 kernels'}: {flags})"

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.model, "arch": self.arch, "int8_flags": list(self.flags), "family": self.family}


def _read_cpuinfo(root: Path) -> str | None:
    try:
        return (root / "proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_model(root: Path = Path("/")) -> str | None:
    """The CPU's marketing name from /proc/cpuinfo ("model name", or "Hardware"/"Model" on ARM boards)."""
    text = _read_cpuinfo(root)
    if text is None:
        return None
    for key in ("model name", "Hardware", "Model", "CPU part"):
        if m := re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE):
            return m.group(1).strip()
    return None


def _machine(text: str | None, machine: str) -> str:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    if text is not None and machine not in ("x86_64", "aarch64"):  # a fake tree in tests: its flags decide
        if re.search(r"^flags\s*:", text, flags=re.MULTILINE):
            return "x86_64"
        if re.search(r"^Features\s*:", text, flags=re.MULTILINE):
            return "aarch64"
    return machine


def int8_family(arch: str, flags: set[str]) -> str | None:
    """The kernel family (a ``FAMILIES`` key) MLAS picks for U8S8 on a CPU with ``flags``; None if not x86-64/aarch64."""
    if arch == "x86_64":
        if "avx2" not in flags:
            return "x86-64-sse"
        vnni = "avx512_vnni" in flags if _AVX512_CORE <= flags else "avx_vnni" in flags
        return "x86-64-vnni" if vnni or "amx_int8" in flags else "x86-64-avx2"
    if arch == "aarch64":
        if "i8mm" in flags:
            return "aarch64-i8mm"
        return "aarch64-dotprod" if "asimddp" in flags else "aarch64-neon"
    return None


def host_cpu(root: Path = Path("/"), *, machine: str | None = None) -> HostCpu:
    """This host's CPU (``root``: a fake tree in tests). Reads the first processor's flags: cores share them."""
    text = _read_cpuinfo(root)
    arch = _machine(text, machine or platform.machine())
    if text is None:
        return HostCpu(arch=arch)
    key, wanted = ("flags", X86_INT8_FLAGS) if arch == "x86_64" else ("Features", ARM_INT8_FLAGS)
    m = re.search(rf"^{key}\s*:\s*(.*)$", text, flags=re.MULTILINE)
    if m is None:
        return HostCpu(arch=arch, model=cpu_model(root))
    present = set(m.group(1).split())
    return HostCpu(arch=arch, model=cpu_model(root), flags=tuple(sorted(present & set(wanted))),
                   family=int8_family(arch, present))


@dataclass(frozen=True)
class Int8Fit:
    """Whether a CPU INT8 artifact computes on this host what its gate measured (``check_int8_host``)."""

    ok: bool
    message: str | None = None  # one line when not ok, or when the host could not be read
    host: HostCpu = field(default_factory=lambda: HostCpu(arch="?"))


def families_text(names: list[str]) -> str:
    """``names`` for a message, the three aarch64 families as one "aarch64" when all are there."""
    arm = [n for n in FAMILIES if n.startswith("aarch64-")]
    short = [n for n in names if n not in arm] + (["aarch64"] if all(a in names for a in arm) else
                                                   [n for n in names if n in arm])
    return ", ".join(short) or "none"


def check_int8_host(cpu_record: dict[str, Any] | None, host: HostCpu) -> Int8Fit:
    """Compare an INT8 manifest's ``details["cpu"]`` (None: a manifest from before it was recorded) with ``host``.

    Not ok when the host's family is outside the artifact's ``valid_for``, or when the host cannot
    be read and the artifact is not exact on every family. The message names the risk in one line
    (it is also set, with ok, for an unreadable host: strict mode refuses what it cannot check).
    """
    if cpu_record is None:
        # Built before manifests recorded it: those builds all kept full 8-bit weights.
        valid, variant, built = sorted(set(FAMILIES) - SATURATING_U8S8), "8-bit weights, built before CPU checks", None
    else:
        valid, variant = list(cpu_record.get("valid_for") or []), cpu_record.get("variant", "?")
        built = (cpu_record.get("build_host") or {}).get("family")
    gated = f"gated on {built}" if built else "gated on an unrecorded CPU"
    if host.family is None:  # ok only if exact on every family (strict mode refuses even then)
        return Int8Fit(set(FAMILIES) <= set(valid), f"cannot read this CPU's features ({host.arch}): the INT8 artifact ({variant}, {gated}) "
                              f"is exact on {families_text(valid)} only", host)
    if host.family in valid:
        return Int8Fit(True, None, host)
    why = ("its uint8 x int8 kernels saturate 16-bit sums on 8-bit weights" if host.family in SATURATING_U8S8
           else "its INT8 kernels are not among those this artifact was shown exact on")
    return Int8Fit(False, f"this CPU ({host.model or host.arch}) is {host.family}: {why}, and this INT8 artifact "
                          f"({variant}, {gated}) is exact on {families_text(valid)} only, so its accuracy here can fall "
                          "below its gate; re-measure with resnet-bench --data, or rebuild it (7-bit weights)", host)
