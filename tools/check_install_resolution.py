"""What `pip install resnet-deploy[...]` resolves to on a Jetson and on an x86-64 host, from the built wheel.

Builds the wheel, then asks pip's own resolver (``pip install --dry-run --report``, with
``--platform`` (manylinux2014 up to glibc 2.35, Ubuntu 22.04's), ``--python-version`` and ``--only-binary :all:``, so nothing is installed and no
source is built; ``--target`` too, which pip before 24 needs with ``--platform``) for each resolution below, and checks each:

* the base install and the ``jetson`` extra hold none of the export toolchain (torch, onnx,
  onnxsim, nvidia-modelopt) and no onnxruntime-gpu;
* no resolution holds both onnxruntime and onnxruntime-gpu.

It prints every resolution's packages and its total download size (the sizes pip's report gives,
else the package index's simple JSON API, where known). Exit 0: every check held; 1: a check failed; 3: the package
index could not be reached, so nothing was checked (tests skip on 3, never pass).

    python tools/check_install_resolution.py [--wheel dist/resnet_deploy-0.1.0-py3-none-any.whl] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: (architecture, CPython version): a JetPack 6 Jetson (Ubuntu 22.04, CPython 3.10), and an x86-64 host
PLATFORMS = (("aarch64", "3.10"), ("x86_64", "3.11"))
#: glibc of Ubuntu 22.04 (JetPack 6): wheels tagged manylinux2014 (glibc 2.17) up to manylinux_2_35 install there
GLIBC_MINOR = 35


def platform_tags(arch: str) -> list[str]:
    """``--platform`` values for a glibc-2.35 Linux on ``arch``: pip before 24 does not expand a tag to the
    older glibc versions it implies, so every one is named, manylinux2014 included."""
    return [f"manylinux2014_{arch}", *(f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 16, -1))]
#: the extras resolved on every platform ("" is the base install)
EXTRAS = ("", "jetson", "cpu", "jetson,cpu")
#: may not appear in the base install nor in the jetson extra
FORBIDDEN = ("torch", "onnx", "onnxsim", "onnxscript", "nvidia-modelopt", "onnxruntime-gpu")
ORT_FLAVOURS = ("onnxruntime", "onnxruntime-gpu")
UNREACHABLE = 3
_NETWORK_WORDS = ("Could not fetch URL", "Max retries exceeded", "Failed to establish a new connection",
                  "Temporary failure in name resolution", "Network is unreachable")


class IndexUnreachable(Exception):
    """pip could not reach the package index: nothing was resolved."""


def build_wheel(dest: Path) -> Path:
    """The project's wheel, built from this checkout into ``dest`` (no dependencies, no network)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest),
                    str(REPO)], check=True, cwd=dest)
    wheels = sorted(dest.glob("resnet_deploy-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def _pip_env() -> dict[str, str]:
    """pip as a user of the package index has it: no local wheel folders or constraints of this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def resolve(wheel: Path, platform: str, python: str, extras: str) -> list[dict]:
    """pip's report ``install`` entries for ``wheel[extras]`` on ``platform``/``python``."""
    target = f"{wheel}[{extras}]" if extras else str(wheel)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        tags = [arg for tag in platform_tags(platform) for arg in ("--platform", tag)]
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), *tags, "--python-version", python, "--implementation", "cp",
               "--only-binary", ":all:", "--target", str(Path(tmp) / "target"), target]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_pip_env(), timeout=600)
        if done.returncode != 0:
            text = done.stdout + done.stderr
            if any(w in text for w in _NETWORK_WORDS):
                raise IndexUnreachable(text.strip().splitlines()[-1])
            raise RuntimeError(f"pip could not resolve {target} for {platform}/{python}:\n{text}")
        return json.loads(report.read_text())["install"]


def _download_size(entry: dict) -> int | None:
    """The file's size in bytes: pip's report where it says, else the index's simple JSON API (PEP 691/700)."""
    info = entry.get("download_info", {})
    if info.get("size"):
        return int(info["size"])
    url = info.get("url", "")
    filename = url.rsplit("/", 1)[-1].split("#", 1)[0]
    request = urllib.request.Request(f"https://pypi.org/simple/{entry['metadata']['name'].lower()}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            files = json.load(reply)["files"]
    except (OSError, ValueError, KeyError):
        return None
    return next((f.get("size") for f in files if f["filename"] == filename), None)


def problems(extras: str, names: set[str]) -> list[str]:
    """What is wrong with a resolution holding the distributions ``names`` (lower-case)."""
    out = []
    if set(extras.split(",")) <= {"", "jetson"}:
        out += [f"{n} in the {'base install' if not extras else 'jetson extra'}" for n in FORBIDDEN if n in names]
    if all(f in names for f in ORT_FLAVOURS):
        out.append("both onnxruntime and onnxruntime-gpu")
    return out


def check(wheel: Path) -> dict:
    """Every resolution: its packages, sizes and problems."""
    results = []
    for platform, python in PLATFORMS:
        for extras in EXTRAS:
            entries = resolve(wheel, platform, python, extras)
            packages = []
            for e in entries:
                name = e["metadata"]["name"].lower().replace("_", "-")
                if name == "resnet-deploy":
                    continue
                packages.append({"name": name, "version": e["metadata"]["version"], "size": _download_size(e)})
            known = [p["size"] for p in packages if p["size"] is not None]
            results.append({"platform": platform, "python": python, "extras": extras,
                            "packages": sorted(packages, key=lambda p: p["name"]),
                            "download_bytes": sum(known), "sizes_unknown": len(packages) - len(known),
                            "problems": problems(extras, {p["name"] for p in packages})})
    return {"wheel": wheel.name, "resolutions": results}


def describe(result: dict) -> str:
    lines = []
    for r in result["resolutions"]:
        what = f"resnet-deploy[{r['extras']}]" if r["extras"] else "resnet-deploy"
        unknown = f" (+{r['sizes_unknown']} of unknown size)" if r["sizes_unknown"] else ""
        lines.append(f"{r['platform']} (manylinux, glibc <= 2.{GLIBC_MINOR}) / CPython {r['python']}: {what}: {len(r['packages'])} packages, "
                     f"{r['download_bytes'] / 1e6:.1f} MB to download{unknown}"
                     + (f"  PROBLEM: {'; '.join(r['problems'])}" if r["problems"] else "  ok"))
        lines.append("    " + ", ".join(f"{p['name']} {p['version']}" for p in r["packages"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, default=None, help="the wheel to resolve (default: build it)")
    parser.add_argument("--json", type=Path, default=None, help="write the resolutions as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or build_wheel(Path(tmp))
        try:
            result = check(wheel)
        except IndexUnreachable as exc:
            print(f"skipped: the package index is unreachable, nothing was resolved ({exc})", file=sys.stderr)
            return UNREACHABLE
    print(describe(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = [r for r in result["resolutions"] if r["problems"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
