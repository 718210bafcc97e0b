"""A fake cuda-python runtime for CPU tests of the CUDA wrapper and the TensorRT session.

It mirrors cuda-python's calling convention (every call returns ``(err, *values)``, errors are
``cudaError_t`` enums with ``cudaGetErrorName``) and backs "device" memory with host memory, so
copies really move bytes and a wrong size or address shows up as wrong data or an error.
Stream capture records work instead of running it; graph launches replay it.
"""

from __future__ import annotations

import ctypes
import enum
from types import SimpleNamespace
from typing import Any

import pytest


class _Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureInvalidated = 901


class _Handle:
    """Stands for cudaStream_t / cudaEvent_t / cudaGraph_t: opaque, converts with int()."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __int__(self) -> int:
        return self.value


class FakeCudart:
    cudaError_t = _Err

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeGlobal = 0
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self) -> None:
        self.device_memory: dict[int, Any] = {}
        self.pinned_memory: dict[int, Any] = {}
        self.streams: set[int] = set()
        self.events: dict[int, float | None] = {}
        self.graphs: dict[int, list] = {}
        self.execs: dict[int, list] = {}
        self.capturing: dict[int, list] = {}  # stream handle -> work recorded under capture
        self.fail: dict[str, _Err] = {}  # call name -> error its next call returns
        self.sticky: _Err | None = None  # a sticky error (illegal address): every later call returns it
        self.invalidate_capture = False
        self.calls: list[str] = []
        self.clock_ms = 0.0  # advanced by copies (0.25 ms) and by fake kernels
        self.device_count = 1
        self.props = SimpleNamespace(name=b"Fake Orin\0\0\0", major=8, minor=7, totalGlobalMem=8 << 30, integrated=1)
        self._next = 0x1000

    # -- helpers for tests
    def live(self) -> int:
        return sum(map(len, (self.device_memory, self.pinned_memory, self.streams, self.events, self.graphs,
                             self.execs)))

    def _new(self) -> int:
        self._next += 16
        return self._next

    def _enter(self, name: str) -> _Err | None:
        self.calls.append(name)
        return self.fail.pop(name, None) or self.sticky

    def _in_device(self, ptr: int, nbytes: int) -> bool:
        return any(base <= ptr and ptr + nbytes <= base + len(buf) for base, buf in self.device_memory.items())

    # -- errors and devices
    def cudaGetErrorName(self, err):  # noqa: N802 - cuda-python's names
        return _Err.cudaSuccess, _Err(err).name.encode()

    def cudaGetLastError(self):  # noqa: N802
        self.calls.append("cudaGetLastError")
        return (_Err.cudaSuccess,)

    def cudaGetDeviceCount(self):  # noqa: N802
        if not self.device_count:
            return _Err.cudaErrorInsufficientDriver, 0
        return _Err.cudaSuccess, self.device_count

    def cudaGetDevice(self):  # noqa: N802
        return (err, None) if (err := self._enter("cudaGetDevice")) else (_Err.cudaSuccess, 0)

    def cudaGetDeviceProperties(self, device):  # noqa: N802
        return (err, None) if (err := self._enter("cudaGetDeviceProperties")) else (_Err.cudaSuccess, self.props)

    # -- memory
    def _malloc(self, name: str, table: dict, nbytes: int):
        if err := self._enter(name):
            return err, None
        buf = ctypes.create_string_buffer(nbytes)
        table[ctypes.addressof(buf)] = buf
        return _Err.cudaSuccess, ctypes.addressof(buf)

    def _free(self, name: str, table: dict, ptr: int):
        if err := self._enter(name):
            return (err,)
        return (_Err.cudaSuccess,) if table.pop(int(ptr), None) is not None else (_Err.cudaErrorInvalidValue,)

    def cudaMalloc(self, nbytes):  # noqa: N802
        return self._malloc("cudaMalloc", self.device_memory, nbytes)

    def cudaFree(self, ptr):  # noqa: N802
        return self._free("cudaFree", self.device_memory, ptr)

    def cudaMallocHost(self, nbytes):  # noqa: N802
        return self._malloc("cudaMallocHost", self.pinned_memory, nbytes)

    def cudaFreeHost(self, ptr):  # noqa: N802
        return self._free("cudaFreeHost", self.pinned_memory, ptr)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        if err := self._enter("cudaMemcpyAsync"):
            return (err,)
        device_side = dst if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else src
        if int(stream) not in self.streams or not self._in_device(device_side, count):
            return (_Err.cudaErrorInvalidValue,)

        def copy() -> None:
            ctypes.memmove(dst, src, count)
            self.clock_ms += 0.25

        self.run_or_capture(int(stream), copy)
        return (_Err.cudaSuccess,)

    # -- streams and events
    def run_or_capture(self, stream: int, work) -> None:
        if stream in self.capturing:
            self.capturing[stream].append(work)
        else:
            work()

    def cudaStreamCreate(self):  # noqa: N802
        if err := self._enter("cudaStreamCreate"):
            return err, None
        handle = self._new()
        self.streams.add(handle)
        return _Err.cudaSuccess, _Handle(handle)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        if err := self._enter("cudaStreamDestroy"):
            return (err,)
        if int(stream) not in self.streams:
            return (_Err.cudaErrorInvalidResourceHandle,)
        self.streams.remove(int(stream))
        return (_Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        if err := self._enter("cudaStreamSynchronize"):
            return (err,)
        return (_Err.cudaSuccess,) if int(stream) in self.streams else (_Err.cudaErrorInvalidResourceHandle,)

    def cudaEventCreate(self):  # noqa: N802
        handle = self._new()
        self.events[handle] = None
        return _Err.cudaSuccess, _Handle(handle)

    def cudaEventRecord(self, event, stream):  # noqa: N802
        self.calls.append("cudaEventRecord")
        self.events[int(event)] = self.clock_ms
        return (_Err.cudaSuccess,)

    def cudaEventSynchronize(self, event):  # noqa: N802
        return (_Err.cudaSuccess,)

    def cudaEventElapsedTime(self, start, end):  # noqa: N802
        t0, t1 = self.events.get(int(start)), self.events.get(int(end))
        if t0 is None or t1 is None:
            return _Err.cudaErrorInvalidResourceHandle, None
        return _Err.cudaSuccess, t1 - t0

    def cudaEventDestroy(self, event):  # noqa: N802
        self.events.pop(int(event))
        return (_Err.cudaSuccess,)

    # -- graphs
    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        if err := self._enter("cudaStreamBeginCapture"):
            return (err,)
        self.capturing[int(stream)] = []
        return (_Err.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        self.calls.append("cudaStreamEndCapture")
        work = self.capturing.pop(int(stream))
        if self.invalidate_capture:
            return _Err.cudaErrorStreamCaptureInvalidated, None
        handle = self._new()
        self.graphs[handle] = work
        return _Err.cudaSuccess, _Handle(handle)

    def cudaGraphInstantiate(self, graph, flags):  # noqa: N802
        if err := self._enter("cudaGraphInstantiate"):
            return err, None
        handle = self._new()
        self.execs[handle] = list(self.graphs[int(graph)])
        return _Err.cudaSuccess, _Handle(handle)

    def cudaGraphDestroy(self, graph):  # noqa: N802
        self.graphs.pop(int(graph))
        return (_Err.cudaSuccess,)

    def cudaGraphLaunch(self, exec_, stream):  # noqa: N802
        self.calls.append("cudaGraphLaunch")
        for work in self.execs[int(exec_)]:
            work()
        return (_Err.cudaSuccess,)

    def cudaGraphExecDestroy(self, exec_):  # noqa: N802
        self.execs.pop(int(exec_))
        return (_Err.cudaSuccess,)


@pytest.fixture
def fake_cudart(monkeypatch: pytest.MonkeyPatch) -> FakeCudart:
    """Install a FakeCudart as the cuda-python runtime that resnet_deploy.runtime.cuda uses."""
    from resnet_deploy.runtime import cuda

    fake = FakeCudart()
    monkeypatch.setattr(cuda, "_cudart", fake)
    return fake
