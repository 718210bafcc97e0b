"""The timing loop: explicit warmup, synchronize before reading the clock, trtexec's definitions.

Throughput is inferences over the total host wall time of the timed loop (trtexec's
"Throughput"); latency is each iteration's host wall time from the call to the synchronized
result (for a GPU backend that includes the host/device copies). A backend that can time its
own compute (TensorRT: CUDA events around ``execute_async_v3``) reports it beside, as GPU
compute time. The input is validated once before the loop; the loop times inference only, as
trtexec and timm's benchmark.py do.

No torch, onnx or click here: the harness times any ``resnet_deploy.runtime.Session``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy.errors import UsageError

if TYPE_CHECKING:
    from resnet_deploy.data import DataSource
    from resnet_deploy.manifest import Preprocess
    from resnet_deploy.runtime.session import Session

PERCENTILES = (50, 90, 95, 99)
#: other processes busier than this (cores, on average) during a run disturb it: its figures are flagged
DISTURBED_CORES = 0.2
#: a backend method ``(batch) -> (logits, {"gpu_compute_ms": ..., "h2d_ms": ..., ...})``: the session times
#: its own device work (TensorRTSession.run_timed: CUDA events, trtexec's H2D / GPU compute / D2H)
TIMED_RUN_METHOD = "run_timed"
_HOST_KEYS = ("host_ms",)  # the backend's own host timing: the harness measures host time itself
_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


@dataclass(frozen=True)
class BenchConfig:
    """How long to run. ``iterations`` (exactly that many timed calls) overrides ``duration_s``."""

    warmup_s: float = 1.0  # untimed calls first: allocator, kernel selection, thread pools spin up
    duration_s: float = 3.0  # trtexec's default
    iterations: int | None = None
    min_iterations: int = 10  # as trtexec: a short duration still gives a usable p90
    batches: tuple[int, ...] = (1, 8)

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.duration_s <= 0:
            raise UsageError(f"`warmup_s` must be >= 0 and `duration_s` > 0 seconds (got {self.warmup_s}, {self.duration_s})")
        if self.iterations is not None and self.iterations < 1:
            raise UsageError(f"`iterations` must be at least 1, got {self.iterations}")
        if not self.batches or min(self.batches) < 1:
            raise UsageError(f"batch sizes must be positive, got {list(self.batches)}")


@dataclass
class Run:
    """One batch size's timing. Times in milliseconds, throughput in inferences (images) per second."""

    batch: int
    iterations: int
    wall_s: float
    latencies_ms: np.ndarray = field(repr=False)
    #: per-iteration device timings the backend reported (``gpu_compute_ms``, ``h2d_ms``, ...), milliseconds
    device_ms: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: CPU cores other processes kept busy during the timed loop, on average (None where /proc/stat is absent)
    other_load_cores: float | None = None

    @property
    def disturbed(self) -> bool:
        return self.other_load_cores is not None and self.other_load_cores > DISTURBED_CORES

    @property
    def gpu_compute_ms(self) -> np.ndarray | None:
        return self.device_ms.get("gpu_compute_ms")

    @property
    def throughput_ips(self) -> float:
        return self.batch * self.iterations / self.wall_s

    def to_dict(self) -> dict[str, Any]:
        """The ``runs[]`` entry of the benchmark report (docs/measurements.md)."""
        return {
            "batch": self.batch,
            "throughput_ips": self.throughput_ips,
            "latency_ms": summarize(self.latencies_ms),
            "gpu_compute_ms": None if self.gpu_compute_ms is None else summarize(self.gpu_compute_ms),
            "iterations": self.iterations,
            "wall_s": self.wall_s,
            "other_load_cores": self.other_load_cores,
            # the backend's other device timings: trtexec's H2D and D2H latency and their sum with GPU compute
            "device_ms": {k: summarize(v) for k, v in self.device_ms.items() if k != "gpu_compute_ms"} or None,
        }


def summarize(values_ms: np.ndarray) -> dict[str, float]:
    """mean, p50, p90, p95, p99 (numpy's linear interpolation), min and max, in milliseconds."""
    v = np.asarray(values_ms, dtype=np.float64)
    pct = np.percentile(v, PERCENTILES)
    return {"mean": float(v.mean()), **{f"p{p}": float(x) for p, x in zip(PERCENTILES, pct)},
            "min": float(v.min()), "max": float(v.max())}


def time_session(session: Session, batch: np.ndarray, *, config: BenchConfig = BenchConfig(),
                 progress: Callable[[float], None] | None = None) -> Run:
    """Time ``session`` on ``batch``: warmup, then the timed loop. ``progress`` gets the fraction done (0..1)."""
    batch = session.check_input(batch)
    timed = getattr(session, TIMED_RUN_METHOD, None)
    if timed is not None:
        def step() -> dict[str, float]:
            return timed(batch)[1]
    else:
        infer = session._run  # validated once above: the loop times inference, not input checks

        def step() -> None:
            infer(batch)

    sync = getattr(session, "synchronize", None) or (lambda: None)
    return time_step(step, sync, batch=len(batch), config=config, progress=progress)


def time_step(step: Callable[[], dict[str, float] | None], sync: Callable[[], None], *, batch: int,
              config: BenchConfig = BenchConfig(), progress: Callable[[float], None] | None = None) -> Run:
    """The loop itself, for any callable: ``step()`` runs one inference and may return device timings (ms)."""
    clock = time.perf_counter
    end_warmup = clock() + config.warmup_s
    while True:  # at least one warmup call: the first is always the slow one
        step()
        sync()
        if clock() >= end_warmup:
            break
    n_target = config.iterations
    lat: list[float] = []
    device: dict[str, list[float]] = {}
    report_every = 0.25  # seconds between progress callbacks, so the bar costs nothing measurable
    next_report = 0.0
    busy0, own0 = machine_busy_s(), time.process_time()
    start = t1 = clock()
    while True:
        t0 = clock()
        g = step()
        sync()
        t1 = clock()
        lat.append(t1 - t0)
        if g:
            for key, value in g.items():
                device.setdefault(key, []).append(value)
        n = len(lat)
        elapsed = t1 - start
        if n_target is not None:
            done = n >= n_target
            frac = n / n_target
        else:
            done = elapsed >= config.duration_s and n >= config.min_iterations
            frac = min(elapsed / config.duration_s, n / config.min_iterations)
        if progress is not None and (done or elapsed >= next_report):
            progress(1.0 if done else min(frac, 1.0))
            next_report = elapsed + report_every
        if done:
            break
    busy1, own1 = machine_busy_s(), time.process_time()
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - start)
    return Run(batch=batch, iterations=len(lat), wall_s=t1 - start, latencies_ms=np.asarray(lat) * 1e3,
               device_ms={k: np.asarray(v) for k, v in device.items() if len(v) == len(lat) and k not in _HOST_KEYS},
               other_load_cores=other)


def machine_busy_s() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat: all but idle and iowait), or None.

    Minus this process's own CPU time over a run, it says how much of the machine others took:
    on a shared machine the difference between a clean figure and a disturbed one.
    """
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


# ----------------------------------------------------------------------------- inputs


def input_shape(session: Session, batch: int, *, dense_resize: int | None = None) -> tuple[int, ...]:
    """The full input shape for ``batch``; dynamic sample dimensions come from the manifest.

    A segmentation or backbone model (any height and width) is timed at ``SizeRange.tuned``: its
    manifest's tuned size, else that of ``dense_resize`` (a PyTorch model's preprocessing).
    """
    from resnet_deploy.manifest import SizeRange

    shape = list(session.sample_shape)
    if any(d is None for d in shape):
        manifest = session.manifest
        size = manifest.size.opt if manifest is not None and manifest.size is not None else (
            None if dense_resize is None else SizeRange.tuned(dense_resize))
        if size is not None:
            shape = [*size, 3] if session.input_dtype == "uint8" else [3, *size]
        elif manifest is None or any(d is None or d < 1 for d in manifest.input.shape[1:]):
            raise UsageError("the model's input size is dynamic and it has no manifest: pass `data` to time real inputs")
        else:
            shape = list(manifest.input.shape[1:])
    return (batch, *shape)


def random_input(session: Session, batch: int, *, seed: int = 0, dense_resize: int | None = None) -> np.ndarray:
    """Seeded random data of the model's input shape and dtype: N(0, 1) floats (a normalised image's range) or uint8."""
    rng = np.random.default_rng(seed)
    shape = input_shape(session, batch, dense_resize=dense_resize)
    if session.input_dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32).astype(_DTYPES[session.input_dtype])


def data_input(session: Session, source: DataSource, pp: Preprocess, batch: int) -> np.ndarray:
    """The first ``batch`` samples of ``source`` as this model's input, repeated if the source is smaller.

    A dense model (no crop) takes whole images of one size per batch: its first image, repeated.
    """
    from resnet_deploy.data import dense_batch, sample_batch

    if pp.crop == 0:
        x = dense_batch(source, pp, session.input_dtype)
    else:
        x = sample_batch(source, pp, session.input_dtype, batch_size=batch)
    if len(x) < batch:
        x = np.concatenate([x] * -(-batch // len(x)))[:batch]
    return np.ascontiguousarray(x)
