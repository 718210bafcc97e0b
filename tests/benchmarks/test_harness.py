"""The timing loop: warmup, iteration and duration modes, statistics, inputs, backend device timings."""

from __future__ import annotations

import time

import numpy as np
import pytest

from resnet_deploy.benchmarks.harness import (BenchConfig, data_input, input_shape, random_input, summarize,
                                              time_session, time_step)
from resnet_deploy.data import open_source
from resnet_deploy.errors import UsageError
from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession


@pytest.fixture(scope="module")
def ort18(demo18_onnx):
    with OnnxRuntimeSession(demo18_onnx, provider="cpu", threads=1) as s:
        yield s


def test_iterations_mode_runs_exactly_n_and_throughput_is_images_over_wall(ort18):
    run = time_session(ort18, random_input(ort18, 4), config=BenchConfig(warmup_s=0, iterations=7))
    assert run.iterations == 7 and run.batch == 4
    assert run.throughput_ips == pytest.approx(4 * 7 / run.wall_s)
    # Per-iteration latencies are inside the timed wall time, and the loop adds almost nothing.
    total_ms = run.latencies_ms.sum()
    assert total_ms <= run.wall_s * 1e3 + 1e-6
    assert total_ms >= 0.9 * run.wall_s * 1e3
    d = run.to_dict()
    lat = d["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert d["gpu_compute_ms"] is None and d["device_ms"] is None


def test_duration_mode_runs_at_least_the_duration_and_min_iterations(ort18):
    config = BenchConfig(warmup_s=0, duration_s=0.3, min_iterations=3)
    run = time_session(ort18, random_input(ort18, 1), config=config)
    assert run.wall_s >= 0.3 and run.iterations >= 3


def test_warmup_calls_are_not_timed_and_at_least_one_happens():
    calls = []

    def step():
        calls.append(time.perf_counter())

    run = time_step(step, lambda: None, batch=2, config=BenchConfig(warmup_s=0, iterations=5))
    assert len(calls) == 6 and run.iterations == 5  # one warmup call even with --warmup 0
    calls.clear()
    time_step(lambda: time.sleep(0.01) or calls.append(1), lambda: None, batch=1,
              config=BenchConfig(warmup_s=0.05, iterations=2))
    assert len(calls) >= 2 + 4  # about 5 warmup calls of 10 ms fill 50 ms


def test_synchronize_runs_before_every_clock_read():
    order = []
    time_step(lambda: order.append("step"), lambda: order.append("sync"), batch=1,
              config=BenchConfig(warmup_s=0, iterations=3))
    assert order == ["step", "sync"] * 4


def test_backend_device_timings_are_summarised_and_host_time_left_to_the_harness():
    values = iter(range(1, 100))

    def step():
        v = float(next(values))
        return {"gpu_compute_ms": v, "h2d_ms": 0.5, "d2h_ms": 0.25, "latency_ms": v + 0.75, "host_ms": 99.0}

    run = time_step(step, lambda: None, batch=8, config=BenchConfig(warmup_s=0, iterations=4))
    d = run.to_dict()
    assert d["gpu_compute_ms"]["mean"] == pytest.approx((2 + 3 + 4 + 5) / 4)  # call 1 was the warmup
    assert set(d["device_ms"]) == {"h2d_ms", "d2h_ms", "latency_ms"}
    assert d["device_ms"]["h2d_ms"]["p99"] == 0.5
    assert d["latency_ms"]["max"] < 99.0  # the harness's own clock, not the backend's host_ms


def test_progress_reaches_one():
    seen = []
    time_step(lambda: None, lambda: None, batch=1, config=BenchConfig(warmup_s=0, iterations=50),
              progress=seen.append)
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)


def test_summarize_percentiles():
    s = summarize(np.arange(1, 101, dtype=float))
    assert s["mean"] == 50.5 and s["p50"] == 50.5 and s["min"] == 1 and s["max"] == 100
    assert s["p99"] == pytest.approx(99.01)


@pytest.mark.parametrize("kwargs", [{"warmup_s": -1}, {"duration_s": 0}, {"iterations": 0}, {"batches": (0, 8)},
                                    {"batches": ()}])
def test_config_rejects_nonsense(kwargs):
    with pytest.raises(UsageError):
        BenchConfig(**kwargs)


def test_random_input_matches_the_model_and_is_seeded(ort18):
    x = random_input(ort18, 3)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x, random_input(ort18, 3))
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2  # N(0, 1), like a normalised image


def test_data_input_is_the_first_batch_repeated(ort18, demo18_onnx):
    from resnet_deploy.manifest import read_manifest

    pp = read_manifest(demo18_onnx).preprocess
    source = open_source("digits", split="eval", count=3)
    x = data_input(ort18, source, pp, 8)
    assert x.shape == (8, 3, 32, 32)
    np.testing.assert_array_equal(x[:3], x[3:6])
    first = next(source.batches(pp, batch_size=3)).as_input("float32", pp)
    np.testing.assert_array_equal(x[:3], first)
    # Real digits: the model classifies the timing batch as their labels say.
    labels = next(source.batches(pp, batch_size=3)).labels
    assert (ort18.run(x[:3]).argmax(axis=1) == labels).all()


def test_input_shape_needs_a_size(ort18):
    assert input_shape(ort18, 5) == (5, 3, 32, 32)

    class Dynamic(OnnxRuntimeSession):
        def __init__(self):  # a graph with dynamic height/width and no manifest
            self.sample_shape, self.manifest, self.input_dtype = (3, None, None), None, "float32"

    with pytest.raises(UsageError, match="`data`"):
        input_shape(Dynamic(), 1)


def test_other_processes_load_is_measured():
    import os

    if not os.path.exists("/proc/stat"):
        pytest.skip("needs Linux /proc/stat")
    run = time_step(lambda: None, lambda: None, batch=1, config=BenchConfig(warmup_s=0, duration_s=0.2))
    assert run.other_load_cores is not None and 0 <= run.other_load_cores <= os.cpu_count()
    assert run.to_dict()["other_load_cores"] == run.other_load_cores
    assert run.disturbed == (run.other_load_cores > 0.2)
