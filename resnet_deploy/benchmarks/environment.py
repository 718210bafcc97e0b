"""What a benchmark ran on: CPU model and INT8 kernel family, threads, package versions, load, Jetson power mode and clocks.

Everything is read from files (``/proc``, ``/sys``, ``/etc``) or ``nvpmodel -q``; anything
unreadable is omitted rather than guessed. ``root`` lets tests point the readers at a fake tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from resnet_deploy.cpuinfo import cpu_model, host_cpu
from resnet_deploy.manifest import package_versions

__all__ = ["VERSIONED", "cpu_model", "default_threads", "environment", "is_jetson", "jetson_clocks",
           "jetson_power_mode"]

VERSIONED = ("numpy", "onnxruntime-gpu", "onnxruntime", "torch", "tensorrt", "cuda-python", "nvidia-modelopt")


def default_threads() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow), else os.cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS / Windows
        return os.cpu_count() or 1


def is_jetson(root: Path = Path("/")) -> bool:
    if (root / "etc/nv_tegra_release").is_file():
        return True
    try:
        return "jetson" in (root / "proc/device-tree/model").read_text(errors="replace").lower()
    except OSError:
        return False


def jetson_power_mode(root: Path = Path("/"), *, query: bool = True) -> str | None:
    """The nvpmodel power mode ("MAXN", "15W", ...): ``nvpmodel -q``, else its status file and /etc/nvpmodel.conf."""
    if query and root == Path("/") and (exe := shutil.which("nvpmodel")):
        try:
            out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=5, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        if m := re.search(r"NV Power Mode:\s*(\S+)", out):
            return m.group(1)
    try:  # nvpmodel keeps the active mode id here, e.g. "pmode:0000 fmode:..."
        status = (root / "var/lib/nvpmodel/status").read_text(errors="replace")
        mode_id = int(re.search(r"pmode:(\d+)", status).group(1))
        conf = (root / "etc/nvpmodel.conf").read_text(errors="replace")
    except (OSError, AttributeError, ValueError):
        return None
    for m in re.finditer(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*(\S+?)\s*>", conf):
        if int(m.group(1)) == mode_id:
            return m.group(2)
    return f"id {mode_id}"


def jetson_clocks(root: Path = Path("/")) -> dict[str, float]:
    """Current clocks in MHz where /sys lets us read them: cpu (max over cores), gpu, emc."""
    out: dict[str, float] = {}
    cpu = [_read_int(p) for p in sorted(root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))]
    if cpu := [c for c in cpu if c]:
        out["cpu_mhz"] = max(cpu) / 1e3  # kHz
    for pattern in ("sys/devices/platform/*gpu*/devfreq/*/cur_freq", "sys/class/devfreq/*gpu*/cur_freq",
                    "sys/class/devfreq/*.ga10b/cur_freq", "sys/class/devfreq/*.gv11b/cur_freq",
                    "sys/devices/gpu.0/devfreq/*/cur_freq"):
        if hz := next((v for p in sorted(root.glob(pattern)) if (v := _read_int(p))), None):
            out["gpu_mhz"] = hz / 1e6
            break
    if hz := _read_int(root / "sys/kernel/debug/bpmp/debug/clk/emc/rate"):  # debugfs: readable as root only
        out["emc_mhz"] = hz / 1e6
    return out


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def environment(*, threads: int | None, root: Path = Path("/")) -> dict[str, Any]:
    """The report's ``environment``: cpu, threads, versions, load average; on Jetson power mode and clocks."""
    cpu = host_cpu(root)
    env: dict[str, Any] = {"cpu": cpu_model(root), "threads": threads, "versions": package_versions(*VERSIONED)}
    if cpu.known:  # which INT8 kernels onnxruntime picks here (resnet_deploy.cpuinfo)
        env["cpu_int8"] = {"family": cpu.family, "flags": list(cpu.flags)}
    try:
        env["load_avg"] = [round(v, 2) for v in os.getloadavg()]  # 1, 5, 15 min: was the machine busy?
    except OSError:
        pass
    if is_jetson(root):
        if mode := jetson_power_mode(root):
            env["power_mode"] = mode
        if clocks := jetson_clocks(root):
            env["clocks"] = clocks
    return env
