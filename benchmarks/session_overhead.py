"""What ``Session.run`` costs over a bare ``onnxruntime.InferenceSession.run`` (at most 3%).

    python benchmarks/session_overhead.py [--model r50.onnx] [--batch 8] [--threads 2]

Without ``--model`` it exports an untrained ResNet-50 (seed 0, needs torch) to a temporary
folder. The callers share one process and one ``InferenceSession`` (so one set of session
options and one intra-op thread pool: two sessions' pools would compete for the cores and bias
whichever runs second): the bare ``InferenceSession.run``, ``Session.run`` as opened by default,
``Session.run`` with I/O binding (does binding help on this provider?), and the bare call again,
whose "overhead" is the method's noise floor. They run interleaved, in alternating order, round
after round; each overhead is the median of the per-round ratios to the bare call. The
validation alone (``check_input``) is also timed on its own: that figure is free of inference
noise.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

LIMIT_PCT = 3.0  # Session.run may cost at most 3% over the bare InferenceSession


def measure(model: Path, *, batch: int, threads: int, rounds: int, calls: int, provider: str = "cpu") -> dict:
    """Per-caller median throughput (img/s) and median per-round overhead (%) over the bare call."""
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    session = OnnxRuntimeSession(model, provider=provider, threads=threads)
    bare = session.raw  # the same InferenceSession: only the wrapper differs
    default_binding, description = session.io_binding, session.description
    shape = (batch, *session.sample_shape)
    rng = np.random.default_rng(0)
    if session.input_dtype == "uint8":
        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        x = rng.standard_normal(shape, dtype=np.float32).astype(session.input_dtype)
    feed, out_name = {session.input_name: x}, [session.output_name]

    def wrapped(io_binding: bool) -> Callable[[], object]:
        def call() -> object:
            session.io_binding = io_binding
            return session.run(x)
        return call

    callers: dict[str, Callable[[], object]] = {
        "bare InferenceSession.run": lambda: bare.run(out_name, feed)[0],
        f"Session.run (io binding {'on' if default_binding else 'off'}: the default here)": wrapped(default_binding),
        f"Session.run (io binding {'off' if default_binding else 'on'})": wrapped(not default_binding),
        "bare InferenceSession.run again (noise floor)": lambda: bare.run(out_name, feed)[0],
    }
    ref = bare.run(out_name, feed)[0]
    for name, call in callers.items():  # same answers, and a warm start for each
        if not np.array_equal(call(), ref):
            raise SystemExit(f"{name} gives other logits than the bare session")
        call()
    per_call: dict[str, list[float]] = {name: [] for name in callers}
    names = list(callers)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            call = callers[name]
            t0 = time.perf_counter()
            for _ in range(calls):
                call()
            per_call[name].append((time.perf_counter() - t0) / calls)
    base = per_call[names[0]]
    result = {"model": str(model), "batch": batch, "threads": threads, "rounds": rounds, "calls_per_round": calls,
              "description": description, "callers": {}}
    for name in names:
        ratios = [t / b for t, b in zip(per_call[name], base)]
        result["callers"][name] = {
            "throughput_ips": batch / statistics.median(per_call[name]),
            "latency_ms_median": 1e3 * statistics.median(per_call[name]),
            "overhead_pct": 100.0 * (statistics.median(ratios) - 1.0),
        }
    session.io_binding = default_binding
    n = 300
    t0 = time.perf_counter()
    for _ in range(n):
        session.check_input(x)
    check_s = (time.perf_counter() - t0) / n
    result["check_input_us"] = 1e6 * check_s
    result["check_input_pct"] = 100.0 * check_s / statistics.median(base)
    session.close()
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An ONNX classifier (default: export an untrained ResNet-50).")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Intra-op threads of the session.")
@click.option("--rounds", type=click.IntRange(min=1), default=25, show_default=True,
              help="Interleaved rounds (median over them).")
@click.option("--calls", type=click.IntRange(min=1), default=2, show_default=True, help="Calls per caller per round.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)
def main(model: Path | None, batch: int, threads: int, rounds: int, calls: int, provider: str) -> None:
    """What Session.run costs over a bare onnxruntime InferenceSession.run; exits 1 over 3%."""
    given = model is not None
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-overhead-") as tmp:
        if model is None:
            from resnet_deploy.cpu_table import export_untrained

            print("exporting an untrained ResNet-50 to ONNX (tens of seconds) ...", file=sys.stderr)
            model = export_untrained("resnet50", Path(tmp) / "resnet50.onnx", max_batch=max(batch, 8))
        r = measure(model, batch=batch, threads=threads, rounds=rounds, calls=calls, provider=provider)
    print(f"model {r['model'] if given else 'resnet50 (untrained, exported now)'}, {r['description']}, "
          f"batch {r['batch']}, {r['rounds']} interleaved rounds x {r['calls_per_round']} calls")
    print(f"{'caller':<50} {'img/s':>8} {'ms/batch':>9} {'overhead':>9}")
    for name, c in r["callers"].items():
        print(f"{name:<50} {c['throughput_ips']:8.2f} {c['latency_ms_median']:9.2f} {c['overhead_pct']:+8.2f}%")
    print(f"check_input alone: {r['check_input_us']:.0f} us per call = {r['check_input_pct']:.3f}% of a bare call")
    default = next(iter(k for k in r["callers"] if k.startswith("Session.run")))
    over = r["callers"][default]["overhead_pct"]
    noise = r["callers"][next(k for k in r["callers"] if k.endswith("(noise floor)"))]["overhead_pct"]
    verdict = "within" if over <= LIMIT_PCT else "OVER"
    print(f"Session.run overhead {over:+.2f}% ({verdict} the {LIMIT_PCT:.0f}% limit; "
          f"the same bare call measured {noise:+.2f}% in this run)")
    sys.exit(0 if over <= LIMIT_PCT else 1)


if __name__ == "__main__":
    main()
