"""ResNet-50 INT8 for the CPU target vs FP32 ONNX in onnxruntime, and the calibrator's peak memory.

    python benchmarks/int8_cpu_speed.py [--model r50.onnx] [--calib-count 64] [--batch 8]
        [--threads 2] [--rounds 7] [--duration 2] [--memory-count 512] [--memory-targets cpu,tensorrt]

1. Without ``--model``, exports an untrained ResNet-50 (seed 0; weights do not change the speed)
   at 224x224 to a temporary folder.
2. Calibrates it for ``--target cpu`` (onnxruntime U8S8 QDQ, entropy) on ``--calib-count`` real
   images: scikit-learn's digits resized to 256 and center-cropped to 224, as the manifest says.
3. Times FP32 and INT8 in one process, batch 8, 2 intra-op threads, in interleaved rounds of
   ``--duration`` seconds each (alternating order, so a neighbour's load hits both); the speedup
   is the median of the per-round ratios; at least 3x is required.
4. Calibrates again on ``--memory-count`` images (512) in a child process per target and prints
   the child's peak RSS (``ru_maxrss``), which must stay under 4 GiB.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

SPEEDUP_MIN = 3.0
RSS_LIMIT_MIB = 4096


def calibrate(model: Path, output: Path, *, target: str, count: int, method: str = "entropy") -> dict:
    """Quantize ``model`` for ``target`` on ``count`` digits:train images (no accuracy gate: untrained weights)."""
    from resnet_deploy.calibration.readers import calibration_batch_size, spool_calibration
    from resnet_deploy.calibration.workspace import private_copy
    from resnet_deploy.data import open_source
    from resnet_deploy.export.artifact import parent_manifest

    manifest = parent_manifest(model)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".resnet-deploy-", dir=output.parent) as tmp:
        work = Path(tmp)
        cset = spool_calibration(open_source("digits", split="train", count=count), manifest.preprocess, work)
        batch = calibration_batch_size(manifest.preprocess.crop)
        reader = cset.reader(manifest, batch_size=batch)
        parent = private_copy(model, work)
        if target == "cpu":
            from resnet_deploy.calibration.cpu import quantize_cpu

            quantize_cpu(parent, reader, output, method=method)
        else:
            from resnet_deploy.calibration.tensorrt import quantize_tensorrt

            quantize_tensorrt(parent, reader, output, method=method)
    return {"target": target, "count": cset.count, "batch": batch, "method": method,
            "seconds": time.perf_counter() - t0}


def speed(fp32: Path, int8: Path, *, batch: int, threads: int, rounds: int, duration_s: float) -> dict:
    """Median throughput of each and the median per-round INT8/FP32 ratio, interleaved in one process."""
    from resnet_deploy.benchmarks.harness import BenchConfig, random_input, time_session
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    sessions = {"fp32": OnnxRuntimeSession(fp32, provider="cpu", threads=threads),
                "int8": OnnxRuntimeSession(int8, provider="cpu", threads=threads)}
    x = random_input(sessions["fp32"], batch)
    config = BenchConfig(warmup_s=0.5, duration_s=duration_s, batches=(batch,))
    ips: dict[str, list[float]] = {name: [] for name in sessions}
    for r in range(rounds):
        for name in (("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")):
            ips[name].append(time_session(sessions[name], x, config=config).throughput_ips)
    ratios = [i / f for i, f in zip(ips["int8"], ips["fp32"])]
    for s in sessions.values():
        s.close()
    return {"batch": batch, "threads": threads, "rounds": rounds, "duration_s": duration_s,
            "fp32_ips": statistics.median(ips["fp32"]), "int8_ips": statistics.median(ips["int8"]),
            "speedup": statistics.median(ratios), "per_round": {k: [round(v, 2) for v in vals] for k, vals in ips.items()}}


def agreement(fp32: Path, int8: Path, *, count: int = 64) -> dict:
    """How close INT8 stays to FP32 on held-out digits (untrained weights: logits are near-tied, so this is a sanity check)."""
    from resnet_deploy.data import open_source
    from resnet_deploy.export.artifact import parent_manifest
    from resnet_deploy.parity import measure_parity
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    pp = parent_manifest(fp32).preprocess
    with OnnxRuntimeSession(fp32, provider="cpu") as a, OnnxRuntimeSession(int8, provider="cpu") as b:
        p = measure_parity(a, b, open_source("digits", split="eval", count=count), pp, batch_size=8)
    return {"top1_agreement": p.top1_agreement, "cosine_min": p.cosine_min}


def peak_rss_child(model: Path, folder: Path, *, target: str, count: int) -> dict:
    """Calibrate in a fresh Python process and return its figures with its peak RSS."""
    import subprocess

    out = folder / f"memory-{target}.onnx"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", target, "--model", str(model),
           "--memory-count", str(count), "--child-output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"calibration child failed ({target}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(model: Path, output: Path, target: str, count: int) -> None:
    import resource

    figures = calibrate(model, output, target=target, count=count)
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(figures))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A ResNet FP32 ONNX with its manifest (default: export ResNet-50).")
@click.option("--calib-count", type=click.IntRange(min=1), default=64, show_default=True,
              help="Calibration images for the timed INT8 model.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=7, show_default=True,
              help="Interleaved rounds (median over them).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Seconds per model per round.")
@click.option("--memory-count", type=click.IntRange(min=1), default=512, show_default=True,
              help="Images for the peak-memory calibration.")
@click.option("--memory-targets", default="cpu,tensorrt", show_default=True,
              help="Targets to measure peak memory for ('' skips).")
@click.option("--child", type=click.Choice(["cpu", "tensorrt"]), default=None, hidden=True)
@click.option("--child-output", type=click.Path(path_type=Path), default=None, hidden=True)
def main(model: Path | None, calib_count: int, batch: int, threads: int, rounds: int, duration: float,
         memory_count: int, memory_targets: str, child: str | None, child_output: Path | None) -> None:
    """ResNet-50 INT8 for the CPU target vs FP32 ONNX in onnxruntime, and the calibrator's peak memory."""
    if child:
        _child(model, child_output, child, memory_count)
        return
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-int8-speed-") as tmp:
        folder = Path(tmp)
        if model is None:
            from resnet_deploy.cpu_table import export_untrained

            print("exporting an untrained ResNet-50 at 224x224 to ONNX ...", file=sys.stderr)
            model = export_untrained("resnet50", folder / "resnet50.onnx", max_batch=max(batch, 8))
        int8 = folder / "int8-cpu.onnx"
        print(f"calibrating for the cpu target on {calib_count} digits at 224x224 ...", file=sys.stderr)
        cal = calibrate(model, int8, target="cpu", count=calib_count)
        print(f"calibrated: {cal['count']} images, {cal['method']}, batch {cal['batch']}, {cal['seconds']:.1f} s")
        close = agreement(model, int8)
        print(f"INT8 vs FP32 on 64 held-out digits: top-1 agreement {close['top1_agreement']:.1%}, "
              f"min cosine {close['cosine_min']:.4f} (untrained weights: near-tied logits)")
        print(f"timing batch {batch}, {threads} threads, {rounds} interleaved rounds x {duration:.0f} s ...",
              file=sys.stderr)
        s = speed(model, int8, batch=batch, threads=threads, rounds=rounds, duration_s=duration)
        print(f"onnxruntime cpu, batch {s['batch']}, {s['threads']} threads, {s['rounds']} rounds: "
              f"FP32 {s['fp32_ips']:.1f} img/s, INT8 {s['int8_ips']:.1f} img/s, speedup {s['speedup']:.2f}x "
              f"(median of per-round ratios; required >= {SPEEDUP_MIN:.0f}x)")
        print(f"per round img/s: fp32 {s['per_round']['fp32']}, int8 {s['per_round']['int8']}")
        ok = s["speedup"] >= SPEEDUP_MIN
        for target in [t for t in memory_targets.split(",") if t]:
            print(f"calibrating for {target} on {memory_count} images in a child process ...", file=sys.stderr)
            m = peak_rss_child(model, folder, target=target, count=memory_count)
            under = m["peak_rss_mib"] < RSS_LIMIT_MIB
            ok &= under
            print(f"calibration {target}: {m['count']} images at 224x224, {m['method']}, batch {m['batch']}, "
                  f"{m['seconds']:.0f} s, peak RSS {m['peak_rss_mib']:.0f} MiB "
                  f"({'under' if under else 'OVER'} {RSS_LIMIT_MIB} MiB)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
