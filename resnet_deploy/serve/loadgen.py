"""A load generator in the spirit of perf_analyzer: N concurrent clients, each one request in flight.

At each concurrency level, N threads each open their own connection (a ``TritonSession``, or
share one thread-safe in-process Session for the baseline) and send requests back to back,
cycling through the prepared input batches, for a duration or a total request count. Per
level: throughput (images per second over the level's wall time), client latency percentiles
(the harness's summary), the server's own queue and compute times from its statistics endpoint,
the mean batch its dynamic batcher formed, and failed requests. Every answer is compared with the
expected logits of its input (the in-process Session of the same artifact), so a lost, wrong or
mixed-up answer shows in the parity figures, not only in the error count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resnet_deploy.benchmarks.harness import Run, machine_busy_s
from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.parity import ParityAccumulator
from resnet_deploy.runtime.session import Session


@dataclass(frozen=True)
class LoadConfig:
    concurrency: tuple[int, ...] = (1,)
    duration_s: float = 5.0  # per level, unless ``requests``
    requests: int | None = None  # exactly this many requests per level, shared by the clients
    warmup_requests: int = 1  # untimed, per client, before the level's clock starts
    timeout_s: float = 600.0  # a level that runs longer than this fails (a hung server)

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1:
            raise UsageError(f"concurrency levels must be positive, got {list(self.concurrency)}")
        if self.duration_s <= 0 or (self.requests is not None and self.requests < 1):
            raise UsageError("--duration must be > 0 and --requests at least 1")


@dataclass
class Inputs:
    """The request batches, and where known the expected logits and labels of each."""

    batches: list[np.ndarray]
    expected: list[np.ndarray] | None = None
    labels: list[np.ndarray | None] | None = None
    description: str = "random input"

    @property
    def batch(self) -> int:
        return len(self.batches[0])


@dataclass
class LoadRun(Run):
    """One concurrency level: a harness Run (``batch`` = images per request) plus what serving adds."""

    concurrency: int = 1
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    server: dict[str, Any] | None = None
    parity: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "concurrency": self.concurrency, "requests": self.requests,
                "errors": self.errors, "first_error": self.first_error, "server": self.server, "parity": self.parity}


def run_level(connect: Callable[[], Session], inputs: Inputs, concurrency: int, *, config: LoadConfig,
              stats: Callable[[], dict[str, Any]] | None = None, shared: bool = False) -> LoadRun:
    """One level: ``concurrency`` clients from ``connect()`` (one shared client where ``shared``)."""
    from resnet_deploy.serve.client import stats_delta

    # tritonclient's HTTP client is gevent-based: each client is made and used in its own thread
    one = connect() if shared else None
    sessions: list[Session | None] = [one] * concurrency
    lock = threading.Lock()
    acc = ParityAccumulator(inputs.description) if inputs.expected is not None else None
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    counter = iter(range(1 << 62))  # next() on a shared iterator: the request index
    stop_at: list[float] = [0.0]
    ready, go = threading.Barrier(concurrency + 1), threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        try:
            _work(k)
        finally:  # closed by the thread that made it; a shared session belongs to the caller
            if not shared and sessions[k] is not None:
                sessions[k].close()

    def _work(k: int) -> None:
        lat = latencies[k]
        session = None
        try:
            session = sessions[k] = sessions[k] or connect()
            for i in range(config.warmup_requests):
                session.run(inputs.batches[(k + i) % len(inputs.batches)])
        except DeployError as exc:
            with lock:
                errors.append(f"warmup: {exc}")
            session = None
        ready.wait()  # every client warm: the server's statistics are read, then the clock starts
        go.wait()
        clock = time.perf_counter
        while session is not None:
            with lock:
                n = next(counter)
            if (config.requests is not None and n >= config.requests) or (config.requests is None and clock() >= stop_at[0]):
                return
            x = inputs.batches[n % len(inputs.batches)]
            t0 = clock()
            try:
                out = session.run(x)
            except DeployError as exc:
                with lock:
                    errors.append(str(exc))
                continue
            lat.append(clock() - t0)
            if acc is not None:
                j = n % len(inputs.batches)
                with lock:
                    acc.update(inputs.expected[j], out, None if inputs.labels is None else inputs.labels[j])

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait(config.timeout_s)
    before = stats() if stats is not None else None
    busy0, own0 = machine_busy_s(), time.process_time()
    start = time.perf_counter()
    stop_at[0] = start + config.duration_s
    go.wait(config.timeout_s)
    for t in threads:
        t.join(max(0.0, start + config.timeout_s - time.perf_counter()))
    wall = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        raise DeployError(f"concurrency {concurrency}: requests still unanswered after {config.timeout_s:.0f} s")
    busy1, own1 = machine_busy_s(), time.process_time()
    after = stats() if stats is not None else None
    lat = np.asarray([v for per in latencies for v in per]) * 1e3
    if not len(lat):
        raise DeployError(f"concurrency {concurrency}: no request succeeded ({errors[0] if errors else 'none sent'})")
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
    return LoadRun(batch=inputs.batch, iterations=len(lat), wall_s=wall, latencies_ms=lat, other_load_cores=other,
                   concurrency=concurrency, requests=len(lat) + len(errors), errors=len(errors),
                   first_error=errors[0] if errors else None,
                   server=None if before is None else stats_delta(before, after),
                   parity=None if acc is None or not acc.n else acc.result().to_dict())


def run_levels(connect: Callable[[], Session], inputs: Inputs, *, config: LoadConfig,
               stats: Callable[[], dict[str, Any]] | None = None, shared: bool = False,
               log: Callable[[str], None] | None = None) -> list[LoadRun]:
    runs = []
    for c in config.concurrency:
        runs.append(run_level(connect, inputs, c, config=config, stats=stats, shared=shared))
        if log is not None:
            r = runs[-1]
            log(f"concurrency {c}: {r.throughput_ips:.1f} img/s, {r.requests} requests, {r.errors} errors")
    return runs


def merged_parity(runs: Sequence[LoadRun]) -> dict[str, Any] | None:
    """The worst parity over levels (largest difference, lowest agreement and cosine): what the report states."""
    parts = [r.parity for r in runs if r.parity]
    if not parts:
        return None
    worst = dict(min(parts, key=lambda p: p["top1_agreement"]))
    worst["max_abs_diff"] = max(p["max_abs_diff"] for p in parts)
    worst["max_rel_diff"] = max(p["max_rel_diff"] for p in parts)
    worst["cosine_min"] = min(p["cosine_min"] for p in parts)
    worst["count"] = sum(p["count"] for p in parts)
    worst["nonfinite"] = sum(p["nonfinite"] for p in parts)
    return worst


def load_rows(runs: Sequence[LoadRun]) -> tuple[list[str], list[list[Any]]]:
    """The table: one row per concurrency level, client latency and the server's own times."""
    headers = ["conc", "batch", "img/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "requests", "errors",
               "queue ms", "infer ms", "srv batch"]
    rows = []
    for r in runs:
        lat = r.to_dict()["latency_ms"]
        s = r.server or {}
        rows.append([r.concurrency, r.batch, r.throughput_ips, lat["p50"], lat["p90"], lat["p95"], lat["p99"],
                     r.requests, r.errors, s.get("queue_ms"), s.get("compute_infer_ms"), s.get("mean_batch")])
    return headers, rows


# ----------------------------------------------------------------------------- resnet-bench triton


def data_inputs(local: Session, source, *, batch: int) -> Inputs:
    """Request batches of ``batch`` images from ``source`` through the manifest's preprocessing, with the
    in-process Session's logits for each (a partial last batch is dropped; a source smaller than one
    batch is repeated to fill it)."""
    manifest = local.manifest
    if manifest is None:
        raise UsageError("the artifact has no manifest: its preprocessing is unknown")
    pp = manifest.preprocess
    batches, labels = [], []
    for b in source.for_model(manifest).batches(pp, batch_size=batch):
        x = np.ascontiguousarray(b.as_input(local.input_dtype, pp))
        y = b.labels
        if len(x) < batch:
            if batches:
                break
            reps = -(-batch // len(x))
            x = np.ascontiguousarray(np.concatenate([x] * reps)[:batch])
            y = None if y is None else np.concatenate([y] * reps)[:batch]
        batches.append(x)
        labels.append(y)
    if not batches:
        raise UsageError(f"{source.description}: no decodable samples")
    expected = [local.run(x) for x in batches]
    return Inputs(batches=batches, expected=expected, labels=labels,
                  description=f"{source.description}, {len(batches)} requests of {batch}")


def random_inputs(session: Session, *, batch: int, count: int = 4) -> Inputs:
    from resnet_deploy.benchmarks.harness import random_input

    return Inputs(batches=[random_input(session, batch, seed=i) for i in range(count)],
                  description=f"seeded random input, {count} requests of {batch}")


def triton_report(url: str, model: str, *, protocol: str = "http", artifact=None, source=None, batch: int = 1,
                  config: LoadConfig = LoadConfig(), threads: int | None = None, log=None):
    """Load ``model`` on the server at ``url``; a benchmark ``Report`` (runs per concurrency level, parity)."""
    from resnet_deploy.benchmarks.environment import environment
    from resnet_deploy.benchmarks.report import Report
    from resnet_deploy.manifest import read_manifest
    from resnet_deploy.runtime import open_session
    from resnet_deploy.serve.client import TritonSession

    if source is not None and artifact is None:
        raise UsageError("--data needs --artifact: the artifact's manifest says how to preprocess, and its "
                         "in-process Session gives the answers to compare with")
    manifest = read_manifest(artifact, required=True) if artifact is not None else None

    def connect() -> TritonSession:
        return TritonSession(url, model, protocol=protocol, manifest=manifest)

    probe = connect()
    try:
        if probe.max_batch is not None and batch > probe.max_batch:
            raise UsageError(f"--batch {batch} is above {model}'s max_batch_size {probe.max_batch}")
        if artifact is not None:
            with open_session(artifact, threads=threads) as local:
                if (local.input_dtype, local.sample_shape) != (probe.input_dtype, probe.sample_shape):
                    raise UsageError(f"{artifact} takes {local.expected_input()}, but {model} on the server takes "
                                     f"{probe.expected_input()}: not the same model")
                inputs = (data_inputs(local, source, batch=batch) if source is not None
                          else _expected(local, random_inputs(probe, batch=batch)))
                reference = f"in-process {local.description} of {artifact}"
        else:
            inputs, reference = random_inputs(probe, batch=batch), None
        runs = run_levels(connect, inputs, config=config, stats=probe.statistics, log=log)
        description = probe.description
    finally:
        probe.close()
    parity = merged_parity(runs)
    accuracy = None
    if parity is not None:
        parity = {**parity, "reference": reference}
        if source is not None:
            accuracy = {"data": inputs.description, "count": parity["count"], "top1": parity["top1"],
                        "top5": parity["top5"]}
    return Report(backend="triton", device=description, model=model,
                  precision=manifest.precision if manifest is not None else "?", runs=runs,
                  environment=environment(threads=threads), accuracy=accuracy, parity=parity,
                  timing={"inputs": inputs.description, "protocol": protocol, "duration_s": config.duration_s,
                          "requests": config.requests, "warmup_requests": config.warmup_requests})


def _expected(local: Session, inputs: Inputs) -> Inputs:
    inputs.expected = [local.run(x) for x in inputs.batches]
    inputs.labels = [None] * len(inputs.batches)
    return inputs
