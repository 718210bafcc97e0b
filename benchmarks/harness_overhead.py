"""Does the harness measure onnxruntime, or itself? Harness throughput against a bare onnxruntime loop.

    python benchmarks/harness_overhead.py [--model M.onnx] [--arch resnet18] [--batch 1,8]
                                          [--threads 2] [--rounds 5] [--duration 3]

Both time the same model with the same session options (intra-op threads, one inter-op thread,
all graph optimisations) on the same input, interleaved round by round so load elsewhere hits
both alike. The bare loop is the smallest honest measurement: ``session.run`` in a loop, total
images over total wall time. Prints each round, the medians, and the median of the per-round
ratios (each pair ran back to back, so it cancels most load from other processes); the harness
should be within 3%.
Without ``--model`` an untrained ``--arch`` at 224x224 is exported to a temporary folder.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np


def bare_loop(session, name: str, x: np.ndarray, *, warmup_s: float, duration_s: float,
              min_iterations: int = 10) -> tuple[float, float | None]:
    """Images per second of ``session.run`` called back to back (no checks, no statistics), and the
    cores other processes kept busy meanwhile (as the harness measures it)."""
    from resnet_deploy.benchmarks.harness import machine_busy_s

    feed = {name: x}
    end = time.perf_counter() + warmup_s
    while True:
        session.run(None, feed)
        if time.perf_counter() >= end:
            break
    n = 0
    busy0, own0 = machine_busy_s(), time.process_time()
    start = time.perf_counter()
    while True:
        session.run(None, feed)
        n += 1
        now = time.perf_counter()
        if now - start >= duration_s and n >= min_iterations:
            break
    busy1, own1 = machine_busy_s(), time.process_time()
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / (now - start)
    return n * len(x) / (now - start), other


def compare(model: Path, *, batches: list[int], threads: int, rounds: int, duration_s: float,
            warmup_s: float = 1.0, out=sys.stdout) -> dict[int, tuple[float, float, float]]:
    """Per batch size: median harness img/s, median bare img/s, median of the per-round harness/bare ratios.

    Rounds in which other processes took CPU (either measurement) are left out of the medians
    when at least one round was clean.
    """
    import onnxruntime as ort

    from resnet_deploy.benchmarks.harness import DISTURBED_CORES, BenchConfig, random_input, time_session
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    opts = ort.SessionOptions()  # what OnnxRuntimeSession sets, spelled out
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    bare = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    name = bare.get_inputs()[0].name
    results = {}
    with OnnxRuntimeSession(model, provider="cpu", threads=threads) as harness_session:
        for batch in batches:
            x = random_input(harness_session, batch)
            config = BenchConfig(warmup_s=warmup_s, duration_s=duration_s, batches=(batch,))
            h, b, clean = [], [], []
            for r in range(rounds):
                # Alternate which goes first, so neither always follows the other's thread-pool spin-down.
                order = ("harness", "bare") if r % 2 == 0 else ("bare", "harness")
                for which in order:
                    if which == "harness":
                        run = time_session(harness_session, x, config=config)
                        h.append(run.throughput_ips)
                        h_other = run.other_load_cores
                    else:
                        ips, b_other = bare_loop(bare, name, x, warmup_s=warmup_s, duration_s=duration_s)
                        b.append(ips)
                busy = [v for v in (h_other, b_other) if v is not None]
                clean.append(all(v <= DISTURBED_CORES for v in busy))
                others = "" if not busy else f" (other processes: {h_other:.2f} / {b_other:.2f} cores)"
                print(f"batch {batch} round {r + 1}: harness {h[-1]:.2f} img/s, bare onnxruntime {b[-1]:.2f} img/s"
                      f"{others}{'' if clean[-1] else ' disturbed'}", file=out, flush=True)
            keep = [i for i, ok in enumerate(clean) if ok] or list(range(rounds))
            results[batch] = (statistics.median(h[i] for i in keep), statistics.median(b[i] for i in keep),
                              statistics.median(h[i] / b[i] for i in keep))
    return results


def _batches(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        batches = [int(b) for b in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated batch sizes, e.g. 1,8") from None
    if any(b < 1 for b in batches):
        raise click.BadParameter(f"{value!r}: batch sizes are at least 1")
    return batches


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An .onnx model (default: an untrained --arch, exported now).")
@click.option("--arch", default="resnet18", show_default=True)
@click.option("--batch", "batches", default="1,8", show_default=True, callback=_batches,
              help="Comma-separated batch sizes.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Seconds per measurement.")
@click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Untimed seconds before each measurement.")
def main(model: Path | None, arch: str, batches: list[int], threads: int, rounds: int, duration: float,
         warmup: float) -> None:
    """Harness throughput against a bare onnxruntime loop; exits 1 when they differ by more than 3%."""
    given = model
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-overhead-") as tmp:
        if model is None:
            from resnet_deploy.cpu_table import export_untrained

            model = export_untrained(arch, Path(tmp) / f"{arch}.onnx")
        results = compare(model, batches=batches, threads=threads, rounds=rounds, duration_s=duration,
                          warmup_s=warmup)
    print(f"model {given or arch + ' (untrained, 224x224)'}, {threads} threads, medians of "
          f"{rounds} interleaved rounds of {duration:g} s, load average {os.getloadavg()[0]:.2f}")
    worst = 0.0
    for batch, (h, b, ratio) in results.items():
        worst = max(worst, abs(ratio - 1))
        print(f"batch {batch}: harness {h:.2f} img/s, bare onnxruntime loop {b:.2f} img/s (medians); "
              f"median per-round harness/bare {ratio:.3f} ({ratio - 1:+.1%})")
    print(f"largest difference {worst:.1%} ({'within' if worst <= 0.03 else 'NOT within'} 3%)")
    sys.exit(0 if worst <= 0.03 else 1)


if __name__ == "__main__":
    main()
