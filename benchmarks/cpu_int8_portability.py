"""CPU INT8 across CPU families: accuracy and speed of the onnxruntime variants here, and on a CPU without VNNI.

    python benchmarks/cpu_int8_portability.py demo [--emulate Haswell] [--rounds 5]
    python benchmarks/cpu_int8_portability.py resnet50 [--calib-count 64] [--eval-count 200] [--openvino]

``demo``: the demo ResNet-18 (32x32, trained on digits). Builds the CPU INT8 artifact as the
pipeline's stage does (512 digits:train, entropy, gate 1 point, fallback on) with the default
7-bit weights, and the other variants of ``resnet_deploy.calibration.cpu.VARIANTS`` all-INT8;
prints each one's parity on digits:eval (540) and times them against FP32 in interleaved rounds
(one process, medians of per-round ratios). With ``--emulate CPU`` (``qemu-x86_64``, whose TCG
emulates AVX2 but neither AVX-512 nor VNNI) it reruns FP32 and the 8-bit and 7-bit graphs on the
first ``--emulate-count`` held-out digits inside the emulator, where onnxruntime's MLAS picks its
AVX2 U8S8 kernels (``vpmaddubsw``) by CPUID: that is what a CPU without VNNI computes. There the
runtime opens each artifact itself, so its CPU check runs for real: qemu-user passes the host's
/proc/cpuinfo through, so a copy whose flags line lists the emulated model's INT8 flags is put
in front of it (``-L``); MLAS reads CPUID, which qemu does emulate.

``resnet50``: ResNet-50 at 224x224 (demo weights: trained on digits at 32x32, so accuracy is low
at 224; agreement with FP32 is what is measured) on a folder of digit PNGs, calibrated on
``--calib-count`` of them (64: calibration at 224 is heavy on two cores), gated on
``--eval-count`` held-out ones; times FP32, both INT8 graphs and, with ``--openvino``, OpenVINO
running the same INT8 ONNX file, interleaved. OpenVINO is not a dependency of resnet-deploy:
``pip install openvino`` beside it to compare.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

HERE = Path(__file__).resolve()
# The flags a qemu CPU model really offers that matter to INT8 (TCG has no AVX-512 and no VNNI).
QEMU_FLAGS = {"Haswell": "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi1 bmi2",
              "Broadwell": "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi1 bmi2 adx",
              "Skylake-Client": "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi1 bmi2 adx"}


def log(msg: str) -> None:
    click.echo(msg, err=True)


def host_line() -> str:
    from resnet_deploy.cpuinfo import host_cpu
    from resnet_deploy.manifest import package_versions

    v = package_versions("onnxruntime", "onnxruntime-gpu", "openvino")
    return (f"host: {host_cpu().describe()}; onnxruntime "
            f"{v.get('onnxruntime') or v.get('onnxruntime-gpu')}" + (f", openvino {v['openvino']}" if "openvino" in v else ""))


# ----------------------------------------------------------------------------- building


def build_variants(fp32: Path, out: Path, *, calib, evaluation, variants: list[str], cache: Path) -> dict:
    """The default variant as the pipeline builds it (gate and fallback), the others all-INT8 (for measurement)."""
    from resnet_deploy.calibration.cpu import PORTABLE
    from resnet_deploy.calibration.gate import Int8Config
    from resnet_deploy.export.int8 import int8_from_onnx
    from resnet_deploy.parity import Gate

    built = {}
    for name in variants:
        default = name == PORTABLE.name
        cfg = Int8Config(target="cpu", method="entropy", cpu_variant=name, cache_dir=cache,
                         gate=Gate(max_drop=1.0) if default else Gate(max_drop=100.0),
                         max_kept=None if default else 0)
        log(f"calibrating {name} ...")
        result = int8_from_onnx(fp32, out / f"{name}.onnx", calib_source=calib, eval_source=evaluation, config=cfg,
                                overwrite=True)
        m = result.manifest
        built[name] = {"path": result.path, "kept": len(m.details["kept_high_precision"]), "parity": m.parity,
                       "weight_max_abs": m.details["structure"]["weight_max_abs"], "seconds": result.seconds}
        p = m.parity
        click.echo(f"{name:20s} kept {built[name]['kept']:2d} layers, |w| <= {built[name]['weight_max_abs']:3d}: "
                   f"agreement {p['top1_agreement']:.2%}, top-1 {p['top1']:.2%} (ref {p['top1_ref']:.2%}, "
                   f"drop {p['top1_drop']:.2f}), max |diff| {p['max_abs_diff']:.3g} on {p['data']}"
                   f"{'  <- default, gated as the pipeline does' if default else ''}")
    return built


# ----------------------------------------------------------------------------- timing


def interleaved(runners: dict, *, batch: int, rounds: int, duration_s: float) -> dict:
    """Median img/s per runner over ``rounds``, order rotating each round; per-round ratios to the first runner."""
    from resnet_deploy.benchmarks.harness import BenchConfig, time_step

    config = BenchConfig(warmup_s=0.5, duration_s=duration_s, batches=(batch,))
    names = list(runners)
    ips: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            ips[name].append(time_step(runners[name], lambda: None, batch=batch, config=config).throughput_ips)
    base = names[0]
    return {n: {"ips": statistics.median(v), "min": min(v), "max": max(v),
                "ratio": statistics.median([a / b for a, b in zip(v, ips[base])])} for n, v in ips.items()}


def ort_runner(path: Path, x: np.ndarray, threads: int):
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    session = OnnxRuntimeSession(path, provider="cpu", threads=threads)
    x = session.check_input(x)
    return (lambda: (session._run(x), None)[1]), session


def openvino_runner(path: Path, x: np.ndarray, threads: int):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                    "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    return (lambda: (request.infer({0: x}), None)[1]), compiled


def openvino_logits(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    run, compiled = openvino_runner(path, x[:1], threads)
    request = compiled.create_infer_request()
    return np.concatenate([next(iter(request.infer({0: x[i:i + 8]}).values())).copy() for i in range(0, len(x), 8)])


def print_speed(title: str, figures: dict, *, against: str | None = None) -> None:
    click.echo(title)
    for name, f in figures.items():
        extra = ""
        if against and name != against:
            extra = f", vs {against} {f['ratio'] / figures[against]['ratio']:.2f}x"
        click.echo(f"  {name:28s} {f['ips']:8.1f} img/s (rounds {f['min']:.1f}..{f['max']:.1f}), "
                   f"vs {next(iter(figures))} {f['ratio']:.2f}x{extra}")


# ----------------------------------------------------------------------------- emulation


def eval_arrays(manifest, source, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for b in source.batches(manifest.preprocess, batch_size=64):
        xs.append(b.as_input(manifest.input.dtype, manifest.preprocess))
        ys.append(b.labels)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x, y) if count is None else (x[:count], y[:count])


def emulate(cpu: str, models: dict[str, Path], x: np.ndarray, folder: Path) -> dict:
    """Logits of ``models`` on ``x`` computed inside ``qemu-x86_64 -cpu CPU``, with the runtime's CPU warnings."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise click.ClickException("qemu-x86_64 is not installed (apt-get install qemu-user)")
    if cpu not in QEMU_FLAGS:
        raise click.BadParameter(f"one of {', '.join(QEMU_FLAGS)}", param_hint="--emulate")
    root = folder / f"qemu-{cpu}"
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/cpuinfo").write_text(f"processor\t: 0\nmodel name\t: QEMU TCG {cpu}\nflags\t\t: {QEMU_FLAGS[cpu]}\n")
    np.save(folder / "emulate-input.npy", x)
    out = folder / "emulate-logits.npz"
    cmd = [qemu, "-cpu", cpu, "-L", str(root), sys.executable, str(HERE), "worker", str(folder / "emulate-input.npy"),
           str(out), *[f"{name}={path}" for name, path in models.items()]]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"the emulated run failed: {done.stderr.strip()[-800:]}")
    notes = [ln for ln in done.stderr.splitlines() if "RuntimeWarning" in ln or "saturat" in ln]
    with np.load(out) as z:
        return {"logits": {k: z[k] for k in z.files}, "notes": notes, "seconds": time.perf_counter() - t0,
                "report": json.loads(done.stdout.strip().splitlines()[-1])}


@click.group()
def cli() -> None:
    """CPU INT8 across CPU families (see the module docstring)."""


@cli.command(hidden=True)
@click.argument("inputs", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.argument("models", nargs=-1)
def worker(inputs: Path, output: Path, models: tuple[str, ...]) -> None:
    """Inside the emulator: numpy and the runtime only (no torch, no onnx). NAME=PATH ..."""
    import warnings

    from resnet_deploy.cpuinfo import host_cpu
    from resnet_deploy.runtime import open_session

    x = np.load(inputs)
    logits, seen = {}, {}
    for item in models:
        name, path = item.split("=", 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = open_session(path, provider="cpu", threads=1)
        seen[name] = [str(w.message) for w in caught]
        with session:
            logits[name] = np.concatenate([session.run(x[i:i + 32]) for i in range(0, len(x), 32)])
    np.savez(output, **logits)
    print(json.dumps({"host": host_cpu().to_dict(), "warnings": seen}))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the artifacts here (default: a temporary folder).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--batch", "batches", default="1,8", show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--duration", type=float, default=2.0, show_default=True, help="Seconds per model, batch and round.")
@click.option("--variants", default="u8s8-w7,u8s8,s8s8,u8s8-w7-per-tensor,u8s8-per-tensor", show_default=True)
@click.option("--emulate", "emulate_cpu", default="Haswell", show_default=True,
              help="qemu CPU model to rerun on (AVX2, no VNNI); 'none' skips.")
@click.option("--emulate-count", type=click.IntRange(min=1), default=120, show_default=True)
def demo(out_dir, threads, batches, rounds, duration, variants, emulate_cpu, emulate_count) -> None:
    """The demo ResNet-18: every variant's parity and speed here, and the 8- vs 7-bit graphs without VNNI."""
    from resnet_deploy.data import open_source
    from resnet_deploy.export.onnx import onnx_from_torch
    from resnet_deploy.manifest import read_manifest
    from resnet_deploy.weights import load_model

    click.echo(host_line())
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-cpu-int8-") as tmp:
        out = out_dir or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        fp32 = out / "demo18.onnx"
        evaluation = open_source("digits", split="eval")
        if not fp32.is_file():
            onnx_from_torch(load_model("resnet18", "demo"), fp32, eval_source=evaluation)
        names = [v.strip() for v in variants.split(",") if v.strip()]
        built = build_variants(fp32, out, calib=open_source("digits", split="train", count=512), evaluation=evaluation,
                               variants=names, cache=out / "calibration-cache")
        x_all, y_all = eval_arrays(read_manifest(fp32), evaluation)
        for batch in [int(b) for b in batches.split(",")]:
            runners, sessions = {}, []
            for name, path in [("fp32", fp32)] + [(n, built[n]["path"]) for n in names]:
                runners[name], s = ort_runner(path, x_all[:batch], threads)
                sessions.append(s)
            figures = interleaved(runners, batch=batch, rounds=rounds, duration_s=duration)
            print_speed(f"onnxruntime cpu, batch {batch}, {threads} threads, {rounds} interleaved rounds x "
                        f"{duration:g} s (medians):", figures, against="u8s8" if "u8s8" in figures else None)
            for s in sessions:
                s.close()
        if emulate_cpu.lower() != "none":
            x, y = x_all[:emulate_count], y_all[:emulate_count]
            chosen = {"fp32": fp32, **{n: built[n]["path"] for n in ("u8s8", "u8s8-w7") if n in built}}
            native = {}
            for name, path in chosen.items():
                run, s = ort_runner(path, x[:1], 1)
                native[name] = np.concatenate([s.run(x[i:i + 32]) for i in range(0, len(x), 32)])
                s.close()
            log(f"rerunning {', '.join(chosen)} on {len(x)} held-out digits under qemu-x86_64 -cpu {emulate_cpu} ...")
            emu = emulate(emulate_cpu, chosen, x, out)
            click.echo(f"emulated {emulate_cpu} ({emu['seconds']:.0f} s), the runtime saw: "
                       f"{emu['report']['host']['family']} ({', '.join(emu['report']['host']['int8_flags'])})")
            ref = emu["logits"]["fp32"]
            for name in chosen:
                if name == "fp32":
                    continue
                got = emu["logits"][name]
                warned = emu["report"]["warnings"].get(name) or []
                click.echo(f"  {name:8s} agreement with FP32 {_agreement(got, ref):.2%} (here {_agreement(native[name], native['fp32']):.2%}), "
                           f"top-1 {np.mean(got.argmax(1) == y):.2%}, mean |diff| {np.abs(got - ref).mean():.4f} "
                           f"(here {np.abs(native[name] - native['fp32']).mean():.4f}), "
                           f"max |emulated - here| {np.abs(got - native[name]).max():.3g}; "
                           f"runtime warning: {'yes: ' + warned[0][:90] + '...' if warned else 'none'}")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--duration", type=float, default=3.0, show_default=True)
@click.option("--calib-count", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--eval-count", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--openvino/--no-openvino", default=True, show_default=True)
def resnet50(out_dir, threads, batch, rounds, duration, calib_count, eval_count, openvino) -> None:
    """ResNet-50 at 224 on digit PNGs: agreement and speed of both INT8 graphs, and OpenVINO on the same file."""
    from PIL import Image

    from resnet_deploy.data import digits_split, open_source
    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
    from resnet_deploy.manifest import read_manifest
    from resnet_deploy.weights import load_model

    click.echo(host_line())
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-cpu-int8-") as tmp:
        out = out_dir or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        folders = {}
        for split in ("train", "eval"):
            folder = folders[split] = out / f"digits-png-{split}"
            if not folder.is_dir():
                images, labels = digits_split(split)
                for i, (img, label) in enumerate(zip(images, labels)):
                    (folder / str(label)).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img, "L").save(folder / str(label) / f"{i:04d}.png")
        evaluation = open_source(folders["eval"], split="eval", count=eval_count)
        calib = open_source(folders["train"], split="train", count=calib_count)
        fp32 = out / "resnet50.onnx"
        if not fp32.is_file():
            log("exporting the demo ResNet-50 at 224x224 ...")
            onnx_from_torch(load_model("resnet50", "demo"), fp32, config=OnnxConfig(image_size=224),
                            eval_source=evaluation)
        built = build_variants(fp32, out, calib=calib, evaluation=evaluation, variants=["u8s8-w7", "u8s8"],
                               cache=out / "calibration-cache")
        x_all, _ = eval_arrays(read_manifest(fp32), evaluation)
        runners, keep = {}, []
        for name, path in (("fp32", fp32), ("u8s8-w7", built["u8s8-w7"]["path"]), ("u8s8", built["u8s8"]["path"])):
            runners[f"onnxruntime {name}"], s = ort_runner(path, x_all[:batch], threads)
            keep.append(s)
        if openvino:
            for name, path in (("u8s8-w7", built["u8s8-w7"]["path"]), ("fp32", fp32)):
                runners[f"openvino {name}"], c = openvino_runner(path, x_all[:batch], threads)
                keep.append(c)
            ref = np.concatenate([keep[0].run(x_all[i:i + 8]) for i in range(0, len(x_all), 8)])
            ov = openvino_logits(built["u8s8-w7"]["path"], x_all, threads)
            click.echo(f"openvino on the same u8s8-w7 file: agreement with onnxruntime FP32 {_agreement(ov, ref):.2%} "
                       f"on {len(x_all)} held-out digit PNGs")
        figures = interleaved(runners, batch=batch, rounds=rounds, duration_s=duration)
        print_speed(f"ResNet-50 224x224, batch {batch}, {threads} threads, {rounds} interleaved rounds x {duration:g} s "
                    "(medians):", figures, against="onnxruntime u8s8-w7")


if __name__ == "__main__":
    cli()
