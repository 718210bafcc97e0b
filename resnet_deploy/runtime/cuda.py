"""A thin cuda-python wrapper: checked calls, device and pinned buffers, streams, events, graphs.

Follows NVIDIA/TensorRT ``samples/python/common_runtime.py`` (``cuda_call``, ``DeviceMem``,
``PinnedHostMem``) and trtexec's ``TrtCudaGraph`` (``samples/common/sampleDevice.h``). cuda-python
is imported on first use: ``from cuda.bindings import runtime`` (cuda-python >= 12.6.1, the only
layout in 13.x), else ``from cuda import cudart`` (older releases, JetPack 6).

Every cuda-python call returns ``(err, *values)``; ``cuda_call`` checks ``err`` and raises a
DeployError naming the call and the CUDA error. Without a driver, cuda-bindings 12.9+ and 13.x
return ``cudaErrorInsufficientDriver``; cuda-python 12.6 to 12.8 instead raise ``RuntimeError:
Failed to dlopen libcuda.so.1`` from every call. ``cudart()`` hands out the module behind a thin
guard that turns such an exception into the same one-line DeployError, so both behave alike and
these error paths run on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnet_deploy.errors import DeployError, MissingDependencyError

CUDA_PYTHON_INSTALL = (
    "pip install cuda-python (on Jetson: the cuda-python release matching JetPack's CUDA, "
    "e.g. cuda-python==12.6.* on JetPack 6)"
)
_NO_GPU_ERRORS = ("cudaErrorInsufficientDriver", "cudaErrorNoDevice", "cudaErrorInitializationError")

_cudart: Any = None
_guarded: Any = None


class _GuardedRuntime:
    """The cuda-python runtime with each function's exceptions turned into a DeployError naming it.

    cuda-python 12.6-12.8 raise ``RuntimeError`` (``Failed to dlopen libcuda.so.1``) where later
    releases return an error code; a binding may also raise TypeError for an argument it cannot
    convert. Enums and types pass through unchanged.
    """

    def __init__(self, module: Any) -> None:
        self.module = module

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.module, name)
        if isinstance(value, type) or not callable(value):
            return value

        def call(*args: Any) -> Any:
            try:
                return value(*args)
            except (RuntimeError, TypeError, ValueError, OSError) as exc:
                # cuda-python 12.6-12.8 raise RuntimeError when the driver cannot be loaded: "Failed to
                # dlopen libcuda.so.1" on the first call, 'Function "cuInit" not found' on later ones.
                hint = " (no usable NVIDIA driver on this machine)" if isinstance(exc, RuntimeError) else ""
                raise DeployError(f"{name} failed: {type(exc).__name__}: {exc}{hint}") from exc

        return call


def cudart() -> Any:
    """The cuda-python runtime module, imported on first use (MissingDependencyError if absent).

    Its functions never raise anything but DeployError (see ``_GuardedRuntime``).
    """
    global _cudart, _guarded
    if _cudart is None:
        try:
            from cuda.bindings import runtime as rt  # cuda-python >= 12.6.1, the only layout in 13.x
        except ImportError:
            try:
                from cuda import cudart as rt  # older cuda-python (JetPack 6 images)
            except ImportError as exc:
                raise MissingDependencyError(f"cuda-python is not installed: {CUDA_PYTHON_INSTALL} ({exc})") from exc
        _cudart = rt
    if _guarded is None or _guarded.module is not _cudart:
        _guarded = _GuardedRuntime(_cudart)
    return _guarded


def error_name(err: Any) -> str:
    """``cudaErrorMemoryAllocation`` for a cudaError_t (falls back to the enum's own name)."""
    try:
        name = cudart().cudaGetErrorName(err)[1]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # a broken binding must not hide the original error
        return str(getattr(err, "name", err))


def cuda_call(result: Any, what: str = "CUDA call") -> Any:
    """Check a cuda-python ``(err, *values)`` result; return None, the one value, or the values' tuple."""
    err: Any
    err, *values = result if isinstance(result, tuple) else (result,)
    code = int(getattr(err, "value", err))
    if code != 0:
        name = error_name(err)
        hint = " (no usable NVIDIA driver or GPU on this machine)" if name in _NO_GPU_ERRORS else ""
        raise DeployError(f"{what} failed: {name} ({code}){hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


# ------------------------------------------------------------------------------------ devices


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100)
    total_memory_bytes: int
    integrated: bool  # True on Jetson: GPU and CPU share DRAM

    @property
    def capability(self) -> tuple[int, int]:
        """(8, 7) for compute capability 8.7, for comparisons."""
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)

    @property
    def sm(self) -> str:
        """``sm_87`` for compute capability 8.7."""
        return "sm_" + self.compute_capability.replace(".", "")


def device_count() -> int:
    """Number of usable CUDA devices; 0 where the driver or a device is missing (never raises for that).

    MissingDependencyError still propagates: no cuda-python is not "no GPU".
    """
    rt = cudart()  # MissingDependencyError propagates
    try:
        err, *values = rt.cudaGetDeviceCount()
    except DeployError:  # cuda-python 12.6-12.8 without a driver
        return 0
    return int(values[0] or 0) if int(getattr(err, "value", err)) == 0 else 0


def device_properties(device: int | None = None) -> DeviceInfo:
    """Name and compute capability of ``device`` (default: the current device)."""
    rt = cudart()
    if device is None:
        device = int(cuda_call(rt.cudaGetDevice(), "cudaGetDevice"))
    props = cuda_call(rt.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = props.name
    if isinstance(name, bytes | bytearray):  # char[256], NUL padded
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return DeviceInfo(
        index=device,
        name=str(name).strip(),
        compute_capability=f"{int(props.major)}.{int(props.minor)}",
        total_memory_bytes=int(props.totalGlobalMem),
        integrated=bool(props.integrated),
    )


# ------------------------------------------------------------------------------------ memory


class _Resource:
    """A CUDA object its owner frees with ``free()`` (idempotent); a context manager, freed on GC as a fallback."""

    def free(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def __del__(self) -> None:  # fallback only; owners call free()
        with contextlib.suppress(Exception):
            self.free()


class DeviceBuffer(_Resource):
    """``nbytes`` bytes of device memory (cudaMalloc) at address ``ptr``; ``free()`` is idempotent."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = 0
        # cudaMalloc(0) may return a null pointer that TensorRT rejects; keep every buffer addressable.
        self.ptr = int(cuda_call(cudart().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes} bytes)"))

    def free(self) -> None:
        ptr, self.ptr = self.ptr, 0
        if ptr:
            cuda_call(cudart().cudaFree(ptr), "cudaFree")


class HostBuffer(_Resource):
    """Page-locked host memory (cudaMallocHost) seen as a numpy array ``array`` of ``shape`` and ``dtype``.

    Pinned memory makes cudaMemcpyAsync truly asynchronous. ``array`` is invalid after ``free()``.
    """

    def __init__(self, shape: tuple[int, ...] | int, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = 0
        self.array: np.ndarray | None = None
        self.ptr = int(cuda_call(cudart().cudaMallocHost(max(self.nbytes, 1)), f"cudaMallocHost({self.nbytes} bytes)"))
        # Wrap as bytes first, then view as the real dtype: np.ctypeslib has no float16 ctype
        # (the same byte-view round trip as common_runtime.PinnedHostMem).
        raw = np.ctypeslib.as_array(
            ctypes.cast(ctypes.c_void_p(self.ptr), ctypes.POINTER(ctypes.c_ubyte)), (max(self.nbytes, 1),)
        )
        self.array = raw[: self.nbytes].view(self.dtype).reshape(self.shape)

    def free(self) -> None:
        self.array = None
        ptr, self.ptr = self.ptr, 0
        if ptr:
            cuda_call(cudart().cudaFreeHost(ptr), "cudaFreeHost")


# ------------------------------------------------------------------------------------ streams, copies, events


def stream_handle(stream: Any) -> int:
    """The native ``cudaStream_t`` of a cuda-python stream as an int (what ``execute_async_v3`` takes)."""
    if isinstance(stream, int):
        return stream
    try:
        from cuda.bindings.utils import get_cuda_native_handle  # cuda-bindings 12.9.1+ and 13.0.0+ prefer this
    except ImportError:
        return int(stream)  # cuda-python 12.x stream objects convert with int()
    try:
        return int(get_cuda_native_handle(stream))
    except TypeError:
        return int(stream)


class Stream(_Resource):
    """A non-default CUDA stream: TensorRT syncs the whole device on the default one (execute_async_v3 docs)."""

    def __init__(self) -> None:
        self.raw: Any = None
        self.raw = cuda_call(cudart().cudaStreamCreate(), "cudaStreamCreate")
        self.handle = stream_handle(self.raw)

    def synchronize(self) -> None:
        cuda_call(cudart().cudaStreamSynchronize(self.raw), "cudaStreamSynchronize")

    def free(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            cuda_call(cudart().cudaStreamDestroy(raw), "cudaStreamDestroy")


def _copy_size(array: np.ndarray, nbytes: int | None) -> int:
    if not array.flags.c_contiguous:
        raise ValueError("CUDA copies need a C-contiguous host array")
    size = array.nbytes if nbytes is None else int(nbytes)
    if not 0 <= size <= array.nbytes:
        raise ValueError(f"copy of {size} bytes does not fit a host array of {array.nbytes} bytes")
    return size


def memcpy_htod_async(dst_ptr: int, src: np.ndarray, stream: Stream, *, nbytes: int | None = None) -> None:
    """Queue a copy of ``nbytes`` (default: all) of host ``src`` to device ``dst_ptr`` on ``stream``."""
    rt = cudart()
    size = _copy_size(src, nbytes)
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    cuda_call(rt.cudaMemcpyAsync(dst_ptr, src.ctypes.data, size, kind, stream.raw), "cudaMemcpyAsync host to device")


def memcpy_dtoh_async(dst: np.ndarray, src_ptr: int, stream: Stream, *, nbytes: int | None = None) -> None:
    """Queue a copy of ``nbytes`` (default: all of ``dst``) from device ``src_ptr`` to host ``dst`` on ``stream``."""
    rt = cudart()
    size = _copy_size(dst, nbytes)
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    cuda_call(rt.cudaMemcpyAsync(dst.ctypes.data, src_ptr, size, kind, stream.raw), "cudaMemcpyAsync device to host")


class Event(_Resource):
    """A CUDA event for timing work on a stream (``elapsed_ms``)."""

    def __init__(self) -> None:
        self.raw: Any = None
        self.raw = cuda_call(cudart().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        cuda_call(cudart().cudaEventRecord(self.raw, stream.raw), "cudaEventRecord")

    def synchronize(self) -> None:
        cuda_call(cudart().cudaEventSynchronize(self.raw), "cudaEventSynchronize")

    def free(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            cuda_call(cudart().cudaEventDestroy(raw), "cudaEventDestroy")


def elapsed_ms(start: Event, end: Event) -> float:
    """GPU time between two recorded events, in milliseconds (resolution about 0.5 us)."""
    end.synchronize()
    return float(cuda_call(cudart().cudaEventElapsedTime(start.raw, end.raw), "cudaEventElapsedTime"))


# ------------------------------------------------------------------------------------ CUDA graphs


class CudaGraph(_Resource):
    """An instantiated CUDA graph (cudaGraphExec_t), replayed with ``launch``."""

    def __init__(self, exec_: Any) -> None:
        self.raw: Any = exec_

    def launch(self, stream: Stream) -> None:
        cuda_call(cudart().cudaGraphLaunch(self.raw, stream.raw), "cudaGraphLaunch")

    def free(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            cuda_call(cudart().cudaGraphExecDestroy(raw), "cudaGraphExecDestroy")


def capture_graph(stream: Stream, enqueue: Callable[[], bool]) -> CudaGraph | None:
    """Capture the work ``enqueue()`` queues on ``stream`` into a graph; None if it cannot be captured.

    ``enqueue`` returns False when the work refused to run under capture (TensorRT's
    execute_async_v3 does so for engines with operations graphs cannot hold). Then, as trtexec
    does (sampleDevice.h ``endCaptureOnError``), the capture is ended, its graph dropped and the
    sticky error cleared, so the stream stays usable without graphs. Thread-local capture mode,
    as trtexec: other threads' sessions may allocate while this one captures.
    """
    rt = cudart()
    mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    cuda_call(rt.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
    try:
        ok = enqueue()
    except BaseException:
        _end_capture_on_error(rt, stream)
        raise
    if not ok:
        _end_capture_on_error(rt, stream)
        return None
    err, graph = rt.cudaStreamEndCapture(stream.raw)
    if int(getattr(err, "value", err)) != 0:  # capture invalidated by a call graphs cannot hold
        rt.cudaGetLastError()
        return None
    try:
        exec_ = cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
    finally:
        rt.cudaGraphDestroy(graph)  # the instantiated graph does not need its template
    return CudaGraph(exec_)


def _end_capture_on_error(rt: Any, stream: Stream) -> None:
    err, graph = rt.cudaStreamEndCapture(stream.raw)
    if int(getattr(err, "value", err)) == 0 and graph is not None:
        rt.cudaGraphDestroy(graph)
    rt.cudaGetLastError()  # clear the capture error so later calls on this thread succeed
