"""Environment readers against real files here and a fake Jetson tree."""

from __future__ import annotations

from pathlib import Path

from resnet_deploy.benchmarks.environment import (cpu_model, default_threads, environment, is_jetson,
                                                  jetson_clocks, jetson_power_mode)

ORIN_CONF = """
< PARAM TYPE=FILE NAME=CPU_ONLINE >
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=30W >
< PM_CONFIG DEFAULT=2 >
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_jetson(root: Path) -> Path:
    write(root, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.0\n")
    write(root, "proc/cpuinfo", "processor\t: 0\nBogoMIPS\t: 62.50\nCPU part\t: 0xd42\n\nModel\t: NVIDIA Jetson AGX Orin\n")
    write(root, "etc/nvpmodel.conf", ORIN_CONF)
    write(root, "var/lib/nvpmodel/status", "pmode:0001 fmode:quiet\n")
    write(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "1497600\n")
    write(root, "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "2201600\n")
    write(root, "sys/class/devfreq/17000000.ga10b/cur_freq", "624750000\n")
    return root


def test_this_machine():
    env = environment(threads=2)
    assert env["threads"] == 2
    assert env["versions"]["numpy"] and env["versions"]["resnet_deploy"]
    assert len(env["load_avg"]) == 3
    assert env["cpu"] == cpu_model()
    assert default_threads() >= 1
    if not is_jetson():
        assert "power_mode" not in env and "clocks" not in env


def test_cpu_model_x86_and_arm(tmp_path):
    write(tmp_path / "x", "proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n")
    assert cpu_model(tmp_path / "x") == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert cpu_model(fake_jetson(tmp_path / "j")) == "NVIDIA Jetson AGX Orin"
    assert cpu_model(tmp_path / "nothing") is None


def test_jetson_power_mode_and_clocks(tmp_path):
    root = fake_jetson(tmp_path)
    assert is_jetson(root)
    assert jetson_power_mode(root) == "15W"
    assert jetson_clocks(root) == {"cpu_mhz": 2201.6, "gpu_mhz": 624.75}
    env = environment(threads=6, root=root)
    assert env["power_mode"] == "15W" and env["clocks"]["gpu_mhz"] == 624.75


def test_unreadable_jetson_facts_are_omitted(tmp_path):
    write(tmp_path, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\0")
    assert is_jetson(tmp_path)
    assert jetson_power_mode(tmp_path) is None
    assert jetson_clocks(tmp_path) == {}
    env = environment(threads=None, root=tmp_path)
    assert "power_mode" not in env and "clocks" not in env


def test_unknown_mode_id_is_reported_as_id(tmp_path):
    write(tmp_path, "etc/nvpmodel.conf", ORIN_CONF)
    write(tmp_path, "var/lib/nvpmodel/status", "pmode:0007\n")
    assert jetson_power_mode(tmp_path) == "id 7"
