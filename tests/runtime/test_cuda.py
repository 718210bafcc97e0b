"""The cuda-python wrapper: CPU tests against a fake runtime, GPU tests (marker ``cuda``) against the real one."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from resnet_deploy.errors import DeployError, MissingDependencyError
from resnet_deploy.runtime import cuda


def _real_cuda() -> bool:
    try:
        return cuda.device_count() > 0
    except MissingDependencyError:
        return False


# ------------------------------------------------------------------------------------ CPU: fake runtime


def test_missing_cuda_python_says_what_to_install(monkeypatch):
    monkeypatch.setattr(cuda, "_cudart", None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(MissingDependencyError, match=r"pip install cuda-python.*Jetson"):
        cuda.cudart()
    with pytest.raises(MissingDependencyError):  # no cuda-python is not "no GPU"
        cuda.device_count()


def test_cuda_call_returns_values_and_names_errors(fake_cudart):
    ok = fake_cudart.cudaError_t.cudaSuccess
    assert cuda.cuda_call((ok,)) is None
    assert cuda.cuda_call((ok, 7)) == 7
    assert cuda.cuda_call((ok, 1, 2)) == (1, 2)
    with pytest.raises(DeployError, match=r"cudaMalloc\(64 bytes\) failed: cudaErrorMemoryAllocation \(2\)"):
        cuda.cuda_call((fake_cudart.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc(64 bytes)")
    with pytest.raises(DeployError, match="no usable NVIDIA driver"):
        cuda.cuda_call((fake_cudart.cudaError_t.cudaErrorInsufficientDriver, None))


def test_failed_allocation_raises_and_leaks_nothing(fake_cudart):
    fake_cudart.fail["cudaMalloc"] = fake_cudart.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(DeployError, match="cudaMalloc.*cudaErrorMemoryAllocation"):
        cuda.DeviceBuffer(1 << 20)
    assert fake_cudart.live() == 0


def test_device_properties(fake_cudart):
    info = cuda.device_properties()
    assert (info.name, info.compute_capability, info.sm, info.capability) == ("Fake Orin", "8.7", "sm_87", (8, 7))
    assert info.integrated and info.total_memory_bytes == 8 << 30


def test_device_count_is_zero_without_driver(fake_cudart):
    fake_cudart.device_count = 0
    assert cuda.device_count() == 0


def test_buffers_round_trip_and_free(fake_cudart):
    stream = cuda.Stream()
    host = cuda.HostBuffer((2, 3), np.float16)
    back = cuda.HostBuffer((2, 3), np.float16)
    dev = cuda.DeviceBuffer(host.nbytes)
    assert host.array.shape == (2, 3) and host.array.dtype == np.float16 and host.nbytes == 12
    host.array[:] = np.arange(6, dtype=np.float16).reshape(2, 3)
    cuda.memcpy_htod_async(dev.ptr, host.array, stream)
    cuda.memcpy_dtoh_async(back.array, dev.ptr, stream, nbytes=8)  # the first 4 values only
    stream.synchronize()
    np.testing.assert_array_equal(back.array.reshape(-1)[:4], np.arange(4))
    assert back.array.reshape(-1)[4:].tolist() == [0, 0]
    for item in (host, back, dev, stream):
        item.free()
        item.free()  # idempotent
    assert host.array is None
    assert fake_cudart.live() == 0


def test_copy_size_is_checked_before_the_copy(fake_cudart):
    stream, dev = cuda.Stream(), cuda.DeviceBuffer(16)
    with pytest.raises(ValueError, match="does not fit"):
        cuda.memcpy_htod_async(dev.ptr, np.zeros(4, np.float32), stream, nbytes=32)
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda.memcpy_htod_async(dev.ptr, np.zeros((4, 4), np.float32)[:, 0], stream)
    assert "cudaMemcpyAsync" not in fake_cudart.calls


def test_events_measure_stream_time(fake_cudart):
    stream, dev, host = cuda.Stream(), cuda.DeviceBuffer(64), np.ones(16, np.float32)
    start, end = cuda.Event(), cuda.Event()
    start.record(stream)
    cuda.memcpy_htod_async(dev.ptr, host, stream)
    cuda.memcpy_htod_async(dev.ptr, host, stream)
    end.record(stream)
    assert cuda.elapsed_ms(start, end) == pytest.approx(0.5)  # two fake copies of 0.25 ms


def test_stream_handle():
    class Raw:
        def __int__(self) -> int:
            return 1234

    assert cuda.stream_handle(99) == 99
    assert cuda.stream_handle(Raw()) == 1234


def _graph_fixture(fake_cudart):
    stream, dev = cuda.Stream(), cuda.DeviceBuffer(16)
    host, back = np.zeros(4, np.float32), np.zeros(4, np.float32)
    return stream, dev, host, back


def test_graph_capture_replays_the_work(fake_cudart):
    stream, dev, host, back = _graph_fixture(fake_cudart)

    def enqueue() -> bool:
        cuda.memcpy_htod_async(dev.ptr, host, stream)
        return True

    graph = cuda.capture_graph(stream, enqueue)
    assert graph is not None and not fake_cudart.graphs  # template destroyed after instantiation
    host[:] = 5.0  # a graph's copy reads the host memory when launched, not when captured
    graph.launch(stream)
    cuda.memcpy_dtoh_async(back, dev.ptr, stream)
    assert back.tolist() == [5.0] * 4
    graph.free()
    assert not fake_cudart.execs


def test_graph_capture_refused_ends_capture_and_clears_error(fake_cudart):
    stream, *_ = _graph_fixture(fake_cudart)
    assert cuda.capture_graph(stream, lambda: False) is None
    assert not fake_cudart.capturing and not fake_cudart.graphs
    assert fake_cudart.calls[-1] == "cudaGetLastError"


def test_graph_capture_invalidated_returns_none(fake_cudart):
    stream, *_ = _graph_fixture(fake_cudart)
    fake_cudart.invalidate_capture = True
    assert cuda.capture_graph(stream, lambda: True) is None
    assert not fake_cudart.capturing and fake_cudart.calls[-1] == "cudaGetLastError"


def test_graph_capture_exception_ends_capture(fake_cudart):
    stream, *_ = _graph_fixture(fake_cudart)

    def boom() -> bool:
        raise RuntimeError("enqueue failed")

    with pytest.raises(RuntimeError, match="enqueue failed"):
        cuda.capture_graph(stream, boom)
    assert not fake_cudart.capturing and not fake_cudart.graphs


class _DlopenFails:
    """cuda-python 12.6-12.8 on a machine without a driver: every call raises RuntimeError."""

    def __getattr__(self, name):
        def call(*args):
            raise RuntimeError("Failed to dlopen libcuda.so.1")

        return call


def test_bindings_that_raise_without_a_driver_give_our_one_line_error(monkeypatch):
    # Defect 2: cuda-python 12.6-12.8 raise RuntimeError where 12.9+ return an error code; the raw
    # RuntimeError escaped "never raises" device_count() and every wrapper call.
    monkeypatch.setattr(cuda, "_cudart", _DlopenFails())
    assert cuda.device_count() == 0
    with pytest.raises(DeployError, match=r"^cudaMalloc failed: RuntimeError: Failed to dlopen libcuda.so.1 "
                                          r"\(no usable NVIDIA driver on this machine\)$"):
        cuda.DeviceBuffer(64)
    with pytest.raises(DeployError, match="cudaGetDevice failed: RuntimeError"):
        cuda.device_properties()
    assert not _real_cuda()  # the module-level skip condition of the GPU tests does not error


def _real_runtime():
    try:
        from cuda.bindings import runtime as rt  # cuda-python >= 12.6.1
    except ImportError:
        try:
            from cuda import cudart as rt  # older layout
        except ImportError:
            pytest.skip("cuda-python is not installed here (CI runs this in its cuda-python environments)")
    return rt


def _arity(function) -> int | None:
    """Parameter count of a cuda-bindings function, from its signature or its docstring's first line."""
    import inspect

    try:
        return len(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        head = (function.__doc__ or "").split("\n", 1)[0]
        m = re.match(r"\w+\((.*)\)", head)
        return None if m is None else len([p for p in m.group(1).split(",") if p.strip()])


def test_fake_cudart_matches_cuda_bindings(fake_cudart):
    """The fake's functions exist in cuda-python with the same number of parameters, and its enum
    members have cuda-python's values (error codes, copy kinds, capture modes)."""
    import inspect

    rt = _real_runtime()
    fake = type(fake_cudart)
    functions = [n for n, v in vars(fake).items() if n.startswith("cuda") and inspect.isfunction(v)]
    assert len(functions) >= 20
    for name in functions:
        real = getattr(rt, name, None)
        assert real is not None, f"{name}: not in cuda-python"
        expected = _arity(real)
        got = len(inspect.signature(getattr(fake, name)).parameters) - 1  # without self
        assert expected is None or got == expected, f"{name}: {got} parameters here, {expected} in cuda-python"
    for enum_name in ("cudaError_t", "cudaMemcpyKind", "cudaStreamCaptureMode"):
        real_enum = getattr(rt, enum_name)
        for member in getattr(fake, enum_name):
            assert int(getattr(real_enum, member.name)) == int(member), f"{enum_name}.{member.name}"


def test_real_bindings_without_a_driver_give_one_line_errors(monkeypatch):
    """The installed cuda-python, on a machine without a driver: 12.6-12.8 raise, 12.9+ return codes;
    both must reach the user as one DeployError line, and device_count() as 0."""
    _real_runtime()
    monkeypatch.setattr(cuda, "_cudart", None)
    if cuda.device_count() > 0:
        pytest.skip("a CUDA device is present: the GPU tests below cover this host")
    with pytest.raises(DeployError) as info:
        cuda.DeviceBuffer(64)
    message = str(info.value)
    assert message.startswith("cudaMalloc") and "\n" not in message
    assert "no usable NVIDIA driver" in message, message


# ------------------------------------------------------------------------------------ GPU: real cuda-python

cuda_only = pytest.mark.skipif(not _real_cuda(), reason="needs cuda-python and a CUDA device")


@pytest.mark.cuda
@cuda_only
def test_real_device_properties():
    info = cuda.device_properties()
    assert info.name and re.fullmatch(r"\d+\.\d+", info.compute_capability)
    assert info.total_memory_bytes > 0


@pytest.mark.cuda
@cuda_only
def test_real_round_trip_events_and_graph():
    with cuda.Stream() as stream, cuda.HostBuffer(1 << 16, np.float32) as host, \
            cuda.HostBuffer(1 << 16, np.float32) as back, cuda.DeviceBuffer(host.nbytes) as dev:
        host.array[:] = np.arange(host.array.size, dtype=np.float32)
        start, end = cuda.Event(), cuda.Event()
        start.record(stream)
        cuda.memcpy_htod_async(dev.ptr, host.array, stream)
        end.record(stream)
        cuda.memcpy_dtoh_async(back.array, dev.ptr, stream)
        stream.synchronize()
        np.testing.assert_array_equal(back.array, host.array)
        assert cuda.elapsed_ms(start, end) >= 0.0

        def enqueue() -> bool:
            cuda.memcpy_htod_async(dev.ptr, host.array, stream)
            return True

        graph = cuda.capture_graph(stream, enqueue)
        assert graph is not None
        host.array[:] = 3.0
        graph.launch(stream)
        cuda.memcpy_dtoh_async(back.array, dev.ptr, stream)
        stream.synchronize()
        assert np.all(back.array == 3.0)
        graph.free()
        start.free()
        end.free()
