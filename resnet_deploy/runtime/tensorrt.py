"""TensorRT session (v3 API, TensorRT 10.3+ and 11.x) and safe engine loading.

An engine is executable code and TensorRT has no validity check before loading (docs/
reliability.md, promise 6), so ``load_engine`` first checks, without TensorRT: the file looks
like an engine (not empty, not ONNX, ZIP, pickle or text), its sidecar manifest has a build record,
and the file's sha256 matches the manifest. Then, with TensorRT, the manifest's TensorRT version
and compute capability against this host, and only then deserializes.

Written against NVIDIA/TensorRT ``samples/python/common_runtime.py`` (buffers, ``do_inference``)
and trtexec (``samples/common/sampleInference.cpp``: graph capture; ``sampleReporting.cpp``:
H2D, GPU compute and D2H times).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy.errors import DeployError, UsageError, require
from resnet_deploy.manifest import Manifest, SizeRange
from resnet_deploy.publish import sha256_bytes
from resnet_deploy.runtime import cuda
from resnet_deploy.runtime.session import Session

if TYPE_CHECKING:  # the types come from tensorrt-stubs (typings/), checked by mypy in CI
    import tensorrt as trt_types

TENSORRT_INSTALL = ("pip install 'resnet-deploy[tensorrt-cu12]' ([tensorrt-cu13] for a CUDA 13 driver; on Jetson "
                    "TensorRT comes with JetPack: pip install 'resnet-deploy[jetson]')")
_log = logging.getLogger(__name__)
_DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.uint8): "uint8", np.dtype(np.float16): "float16"}
# A serialized engine holds at least a header and the network's weights; anything shorter is cut off.
_MIN_PLAN_BYTES = 64
# ONNX ModelProto starts with field 1 (ir_version, varint), then a field numbered 2..8 or 14.
_ONNX_SECOND_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or MissingDependencyError saying what to install."""
    return require("tensorrt", install=TENSORRT_INSTALL)


def dims(value: trt_types.Dims | tuple[int, ...]) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple of ints."""
    # Dims iterates like a tuple (pybind11 sequence protocol); tensorrt-stubs 10.13 omit __iter__.
    return tuple(int(d) for d in value)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ logging


class _LogLines:
    """The process-wide TensorRT logger's memory: the last errors, read back after a failure.

    One logger for the whole process, as Polygraphy does: TensorRT keeps the first logger it is
    given for some messages, so a fresh logger per call could miss the very error we want to show.
    """

    def __init__(self) -> None:
        self.errors: collections.deque[str] = collections.deque(maxlen=64)
        self.count = 0

    def mark(self) -> int:
        return self.count

    def since(self, mark: int, *, last: int = 5) -> str:
        new = list(self.errors)[-min(self.count - mark, len(self.errors)):] if self.count > mark else []
        return "; ".join(line.strip() for line in new[-last:]) or "TensorRT logged no error"


_logger: Any = None


def trt_logger(trt: Any) -> Any:
    """The process-wide ``trt.ILogger``: errors kept in ``.lines`` for error messages, the rest to ``logging``."""
    global _logger
    if _logger is not None and _logger.trt is trt:
        return _logger
    errors = {trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR}  # Severity values are exported onto ILogger

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # required by the pybind11 trampoline (ILogger docs)
            self.trt = trt
            self.lines = _LogLines()

        def log(self, severity: Any, msg: str) -> None:
            try:  # log() is noexcept in C++: never let an exception escape
                if severity in errors:
                    self.lines.errors.append(msg)
                    self.lines.count += 1
                    _log.error("TensorRT: %s", msg)
                elif severity == trt.ILogger.WARNING:
                    _log.warning("TensorRT: %s", msg)
                else:
                    _log.debug("TensorRT: %s", msg)
            except Exception:
                pass

    _logger = CapturingLogger()
    return _logger


# ------------------------------------------------------------------------------------ checks before loading


def check_plan_bytes(data: bytes, path: str | os.PathLike[str]) -> None:
    """Refuse bytes that are plainly not a serialized engine, before TensorRT sees them."""
    why = None
    if not data:
        why = "the file is empty"
    elif len(data) < _MIN_PLAN_BYTES:
        why = f"only {len(data)} bytes: truncated"
    elif data[:4] == b"PK\x03\x04":
        why = "it is a ZIP archive (a PyTorch checkpoint?)"
    elif data[:6] == b"\x93NUMPY":
        why = "it is a NumPy array file"
    elif data[0] == 0x80 and 2 <= data[1] <= 5:
        why = "it is a Python pickle"
    elif data[0] == 0x08 and 1 <= data[1] <= 20 and data[2] in _ONNX_SECOND_TAGS:
        why = "it is an ONNX model: build an engine from it with `resnet-export trt`"
    elif b"\0" not in data[:4096] and _is_text(data[:4096]):
        why = "it is a text file"
    if why:
        raise UsageError(f"{path}: not a TensorRT engine ({why})")


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a multi-byte character cut at the end of the window
    return True


def check_manifest(data: bytes, manifest: Manifest | None, path: str | os.PathLike[str], *,
                   verify_hash: bool = True) -> dict[str, Any]:
    """The manifest's build record, after checking the plan's sha256 against it (no TensorRT needed)."""
    if manifest is None:
        raise UsageError(
            f"{path}: no manifest ({Path(path).name}.json) to check this engine against the host; "
            "an engine is executable code: rebuild it with `resnet-export trt`, or open it with "
            "allow_unverified=True if you trust where it came from"
        )
    build = manifest.build or {}
    if not build.get("tensorrt") or not build.get("compute_capability") or not manifest.source.get("sha256"):
        raise UsageError(
            f"{path}: its manifest has no TensorRT build record (tensorrt, compute_capability, sha256): "
            "not written by `resnet-export trt`; rebuild the engine"
        )
    if verify_hash and sha256_bytes(data) != manifest.source["sha256"]:
        raise UsageError(
            f"{path}: does not match the sha256 recorded in its manifest (truncated, modified, "
            "or the manifest belongs to another file): rebuild it with `resnet-export trt`"
        )
    return build


@dataclass(frozen=True)
class HostInfo:
    """What an engine must match: the TensorRT version and the GPU."""

    tensorrt: str  # "10.13.3.9"
    compute_capability: str  # "8.7"
    gpu: str = ""
    integrated: bool = False  # Jetson


def host_info(trt: Any) -> HostInfo:
    props = cuda.device_properties()
    return HostInfo(trt.__version__, props.compute_capability, props.name, props.integrated)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(m.group()) for part in str(text).split(".")[:3] if (m := re.match(r"\d+", part)))


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


#: (built major, runtime major) pairs across which NVIDIA documents version-compatible engines to
#: run: TensorRT 8 (8.6+) on 9 and 10, TensorRT 10 on 11 (docs/tensorrt.md, "Compatibility rules").
CROSS_MAJOR_VERSION_COMPATIBLE = frozenset({(8, 9), (8, 10), (10, 11)})


def version_compatible_runs(built: str, host: str) -> bool:
    """Whether a version-compatible engine built with TensorRT ``built`` loads on TensorRT ``host``."""
    built_v, host_v = _version(built), _version(host)
    if built_v < (8, 6) or host_v < built_v:  # version compatibility starts at 8.6; never onto an older runtime
        return False
    return built_v[0] == host_v[0] or (built_v[0], host_v[0]) in CROSS_MAJOR_VERSION_COMPATIBLE


def check_build_matches_host(build: dict[str, Any], host: HostInfo, *, path: str | os.PathLike[str]) -> None:
    """Refuse an engine built for another TensorRT version or GPU, naming both.

    A plain engine runs only on the TensorRT release (major.minor.patch) and the compute
    capability it was built for. A version-compatible one runs on the same or a later release of
    its major, and across the majors NVIDIA documents (``CROSS_MAJOR_VERSION_COMPATIBLE``). A
    hardware-compatible one (AMPERE_PLUS) runs on any discrete GPU of compute capability 8.0+.
    """
    built_v, host_v = _version(build["tensorrt"]), _version(host.tensorrt)
    if build.get("version_compatible"):
        version_ok = version_compatible_runs(build["tensorrt"], host.tensorrt)
    else:
        version_ok = built_v == host_v
    reason = ""
    if build.get("hardware_compatibility"):
        gpu_ok = _cc(host.compute_capability) >= (8, 0) and not host.integrated
        if host.integrated:
            reason = " (hardware-compatible engines do not run on Jetson)"
    else:
        gpu_ok = _cc(build["compute_capability"]) == _cc(host.compute_capability)
    built_integrated = build.get("integrated")  # recorded since this check; older manifests lack it
    if built_integrated is not None and bool(built_integrated) != host.integrated:
        gpu_ok = False
        reason = (" (built on Jetson, this is a discrete GPU)" if built_integrated
                  else " (built on a discrete GPU, this is Jetson)")
    if not (version_ok and gpu_ok):
        built_sm = "sm_" + build["compute_capability"].replace(".", "")
        host_sm = "sm_" + host.compute_capability.replace(".", "")
        raise UsageError(
            f"{path}: built for TRT {build['tensorrt']} / {built_sm}, this is TRT {host.tensorrt} / {host_sm}"
            f"{reason}: rebuild it on this machine with `resnet-export trt`"
        )


# ------------------------------------------------------------------------------------ loading


@dataclass
class LoadedEngine:
    """A deserialized engine with what must outlive it (TensorRT's runtime and logger)."""

    trt: Any  # the tensorrt module
    runtime: trt_types.Runtime | None
    engine: trt_types.ICudaEngine | None
    host: HostInfo


def read_plan(path: str | os.PathLike[str]) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    data = path.read_bytes()
    check_plan_bytes(data, path)
    return data


def load_engine(path: str | os.PathLike[str], *, manifest: Manifest | None, verify_hash: bool = True,
                allow_unverified: bool = False) -> LoadedEngine:
    """Check ``path`` and its manifest against this host, then deserialize it.

    File and manifest checks run before TensorRT is imported, so they also work (and fail
    clearly) on machines without it. ``allow_unverified`` skips the manifest checks, for engines
    built elsewhere (trtexec) that you trust; the file check still runs.
    """
    data = read_plan(path)
    build = None if allow_unverified else check_manifest(data, manifest, path, verify_hash=verify_hash)
    trt = import_tensorrt()
    host = host_info(trt)
    if build is not None:
        check_build_matches_host(build, host, path=path)
    logger = trt_logger(trt)
    mark = logger.lines.mark()
    runtime: trt_types.Runtime = trt.Runtime(logger)
    if build is not None and build.get("version_compatible"):
        # Version-compatible plans carry their own lean runtime; loading it runs host code from
        # the plan, which is why this is set only for engines whose manifest and hash checked out.
        runtime.engine_host_code_allowed = True
    engine: trt_types.ICudaEngine | None = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise UsageError(
            f"{path}: not a TensorRT engine that TensorRT {host.tensorrt} can load on {host.gpu or 'this GPU'} "
            f"(garbage, truncated, or built by another TensorRT version): {logger.lines.since(mark)}"
        )
    return LoadedEngine(trt=trt, runtime=runtime, engine=engine, host=host)


# ------------------------------------------------------------------------------------ session


@dataclass
class _Tensor:
    """An engine I/O tensor's pinned host and device buffers, grown when a call needs more bytes."""

    name: str
    dtype: np.dtype
    host: cuda.HostBuffer | None = None
    device: cuda.DeviceBuffer | None = None

    @property
    def capacity(self) -> int:
        return 0 if self.host is None else self.host.nbytes


class TensorRTSession(Session):
    """Run a TensorRT engine: ``with TensorRTSession("model.plan", manifest=m) as s: logits = s.run(x)``.

    One input; one output for a classifier, several named outputs for a backbone (``run_outputs``).
    Buffers (pinned host and device memory) are sized for a classifier's largest batch at setup;
    for an engine with a dynamic height and width (segmentation, backbones) for the profile's
    tuned shape, and grown when a call needs more. Each call sets the input shape, reads every
    output's shape back from the execution context, copies the batch in, runs
    ``execute_async_v3`` on a private stream and copies the outputs back. With
    ``cuda_graph=True`` the engine call is captured into a CUDA graph after its first run at a
    batch shape and replayed afterwards; a new shape recaptures, and an engine that cannot be
    captured runs without graphs (``graph_note`` says why).
    """

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], *, manifest: Manifest | None = None, cuda_graph: bool = False,
                 verify_hash: bool = True, allow_unverified: bool = False) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.cuda_graph = cuda_graph
        self.graph_note: str | None = None
        #: frees that failed in close() (after a sticky CUDA error), for diagnosis
        self.close_errors: list[str] = []
        #: the TensorRT version and GPU this session runs on (kept after close, for reports)
        self.host: HostInfo | None = None
        self._loaded: LoadedEngine | None = None
        self._context: trt_types.IExecutionContext | None = None
        self._stream: cuda.Stream | None = None
        self._buffers: list[Any] = []
        self._events: list[cuda.Event] = []
        self._graph: cuda.CudaGraph | None = None
        self._shape: tuple[int, ...] | None = None
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._loaded = load_engine(self.path, manifest=manifest, verify_hash=verify_hash,
                                   allow_unverified=allow_unverified)
        self.host = self._loaded.host
        try:
            self._setup(self._loaded)
        except BaseException:
            self.close()
            raise

    def _setup(self, loaded: LoadedEngine) -> None:
        trt, engine = loaded.trt, loaded.engine
        assert engine is not None  # load_engine returns a deserialized engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        # A classifier's manifest means one output; an engine opened without one may have several (run_outputs).
        classifier = self.manifest is not None and self.manifest.task == "classify"
        if len(inputs) != 1 or not outputs or (classifier and len(outputs) != 1):
            kind = "a classifier engine has one input and one output" if classifier else \
                "an engine has one input and at least one output"
            raise UsageError(f"{self.path}: {kind}, this one has inputs {inputs} and outputs {outputs}")
        self.input_name = inputs[0]
        m = self.manifest
        if m is not None and m.input.name != self.input_name:
            raise UsageError(f"{self.path}: engine input is {self.input_name!r} but its manifest says "
                             f"{m.input.name!r}: the manifest belongs to another model")
        if m is not None and m.task != "classify":
            if sorted(m.output_names) != sorted(outputs):
                raise UsageError(f"{self.path}: its manifest names outputs {list(m.output_names)} but the engine "
                                 f"has {outputs}: the manifest belongs to another model")
            outputs = list(m.output_names)  # the manifest's order (c2..c5), whatever order TensorRT lists them in
        self.output_names = tuple(outputs)
        try:  # nptype raises TypeError for types numpy lacks (bfloat16, fp8)
            in_dtype, *out_dtypes = (np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in (inputs[0], *outputs))
        except TypeError as exc:
            raise UsageError(f"{self.path}: engine I/O type numpy cannot hold ({exc})") from exc
        if in_dtype not in _DTYPE_NAMES:
            raise UsageError(f"{self.path}: unsupported input dtype {in_dtype}")
        self.input_dtype = _DTYPE_NAMES[in_dtype]
        shape = dims(engine.get_tensor_shape(self.input_name))
        self.sample_shape = tuple(None if d < 0 else d for d in shape[1:])
        if any(d < 0 for d in shape):
            lo, opt, hi = (dims(s) for s in engine.get_tensor_profile_shape(self.input_name, 0))
        else:  # built with static shapes: no optimization profile
            lo = opt = hi = shape
        self._profile = (lo, hi)
        self.min_batch, self.max_batch = lo[0], hi[0]
        self.size_range = self._size_range(shape, lo, opt, hi)

        self._context = context = engine.create_execution_context()
        if context is None:
            raise DeployError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = cuda.Stream()
        self._input = _Tensor(self.input_name, in_dtype)
        self._outputs = [_Tensor(n, d) for n, d in zip(self.output_names, out_dtypes)]
        # A fixed-size engine (a classifier) gets its buffers for the largest batch once; a dynamic
        # height and width could need gigabytes at the profile's max, so those start at its opt.
        self._bind(hi if self.size_range is None else opt)

    def _size_range(self, shape: tuple[int, ...], lo: tuple[int, ...], opt: tuple[int, ...],
                    hi: tuple[int, ...]) -> SizeRange | None:
        """The engine profile's height/width range (None: fixed), checked against the manifest's ``size``."""
        h, w = self.hw_axes
        dynamic = len(shape) == 4 and (shape[h] < 0 or shape[w] < 0)
        # A profile of another form (trtexec's, not a square box) leaves TensorRT's set_input_shape as the check.
        engine = SizeRange(min=lo[h], opt=(opt[h], opt[w]), max=hi[h]) \
            if dynamic and lo[h] == lo[w] and hi[h] == hi[w] else None
        if self.manifest is None:
            return engine
        given = self.manifest.size
        bounds = [None if r is None else (r.min, r.max) for r in (given, engine)]
        if bounds[0] != bounds[1]:
            said = "a fixed size" if given is None else f"sizes {given.min}..{given.max}"
            took = (f"sizes {engine.min}..{engine.max}" if engine else
                    f"heights {lo[h]}..{hi[h]} and widths {lo[w]}..{hi[w]}" if dynamic else "a fixed size")
            raise UsageError(f"{self.path}: its manifest says {said} but the engine's profile takes {took}: "
                             "the manifest belongs to another model")
        return given

    def _keep(self, buffer: Any) -> Any:
        self._buffers.append(buffer)  # freed by close(), also when setup fails half way
        return buffer

    @property
    def description(self) -> str:
        host = self.host
        where = f"TensorRT {host.tensorrt} on {host.gpu}" if host else "TensorRT"
        return f"tensorrt ({where}{', CUDA graphs' if self.cuda_graph else ''})"

    @property
    def engine(self) -> Any:
        """The underlying ``tensorrt.ICudaEngine``."""
        return None if self._loaded is None else self._loaded.engine

    def _live(self) -> tuple[trt_types.IExecutionContext, cuda.Stream]:
        """The execution context and stream, or UsageError once the session is closed."""
        if self._context is None or self._stream is None:
            raise UsageError("this TensorRT session is closed")
        return self._context, self._stream

    def _bind(self, shape: tuple[int, ...]) -> None:
        """Set the input shape, read each output's shape back, and grow the buffers that are too small."""
        context, _ = self._live()
        self._shape = None  # until every step below succeeded
        self._drop_graph()  # a graph holds the shapes and addresses it was captured with
        if not context.set_input_shape(self.input_name, tuple(shape)):
            lo, hi = self._profile
            raise UsageError(f"{self.path}: TensorRT refused input shape {tuple(shape)} (profile {lo} .. {hi})")
        self._fit(self._input, shape)
        out_shapes = {}
        for tensor in self._outputs:
            out = dims(context.get_tensor_shape(tensor.name))
            if any(d < 0 for d in out):  # data-dependent: needs an IOutputAllocator, which no ResNet needs
                raise DeployError(f"{self.path}: output {tensor.name!r} has no shape before running ({out})")
            self._fit(tensor, out)
            out_shapes[tensor.name] = out
        self._out_shapes = out_shapes
        self._shape = tuple(shape)

    def _fit(self, tensor: _Tensor, shape: tuple[int, ...]) -> None:
        """Make ``tensor``'s buffers hold ``shape``: reused when big enough, else replaced and re-addressed."""
        count = int(np.prod(shape, dtype=np.int64))
        if count * tensor.dtype.itemsize <= tensor.capacity:
            return
        context, _ = self._live()
        for old in (tensor.host, tensor.device):
            if old is not None:
                self._buffers.remove(old)
                old.free()
        tensor.host = tensor.device = None
        tensor.host = self._keep(cuda.HostBuffer(count, tensor.dtype))
        tensor.device = self._keep(cuda.DeviceBuffer(tensor.host.nbytes))
        if not context.set_tensor_address(tensor.name, tensor.device.ptr):
            raise DeployError(f"{self.path}: TensorRT refused the address of tensor {tensor.name!r}")

    def _drop_graph(self) -> None:
        graph, self._graph = self._graph, None
        if graph is not None:
            graph.free()

    def _execute(self) -> bool:
        context, stream = self._live()
        return bool(context.execute_async_v3(stream.handle))

    def _enqueue(self) -> None:
        _, stream = self._live()
        if self._graph is not None:
            self._graph.launch(stream)
            return
        assert self._loaded is not None
        lines = trt_logger(self._loaded.trt).lines
        mark = lines.mark()
        if not self._execute():
            raise DeployError(f"{self.path}: TensorRT execution failed: {lines.since(mark)}")

    def _capture(self) -> None:
        """Capture the engine call into a graph; on any failure run without graphs from now on.

        Runs after a plain run whose logits are already in the host buffer, so a failed capture
        (refused by the engine, cudaStreamBeginCapture or cudaGraphInstantiate failing) costs
        only the graph, never the result.
        """
        _, stream = self._live()
        try:
            graph = cuda.capture_graph(stream, self._execute)
        except DeployError as exc:
            graph, why = None, f"CUDA graph capture failed ({exc}); running without graphs"
        else:
            why = "this engine cannot run under CUDA graph capture; running without graphs"
        if graph is None:
            self.cuda_graph = False
            self.graph_note = why
            warnings.warn(f"{self.path}: {self.graph_note}", RuntimeWarning, stacklevel=3)
        else:
            self._graph = graph

    def _infer(self, batch: np.ndarray, *, timed: bool) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        _, stream = self._live()
        if batch.shape != self._shape:
            self._bind(batch.shape)
        src = self._input
        assert src.host is not None and src.host.array is not None and src.device is not None
        src.host.array[: batch.size] = batch.reshape(-1)
        if timed and not self._events:
            self._events = [cuda.Event() for _ in range(4)]
        ev = self._events
        if timed:
            ev[0].record(stream)
        cuda.memcpy_htod_async(src.device.ptr, src.host.array, stream, nbytes=batch.nbytes)
        if timed:
            ev[1].record(stream)
        self._enqueue()
        if timed:
            ev[2].record(stream)
        views = {}
        for t in self._outputs:
            assert t.host is not None and t.host.array is not None and t.device is not None
            shape = self._out_shapes[t.name]
            view = t.host.array[: int(np.prod(shape, dtype=np.int64))]
            cuda.memcpy_dtoh_async(view, t.device.ptr, stream)
            views[t.name] = view.reshape(shape)
        if timed:
            ev[3].record(stream)
        stream.synchronize()
        outputs = {name: view.astype(np.float32, copy=True) for name, view in views.items()}
        times: dict[str, float] = {}
        if timed:
            times = {"h2d_ms": cuda.elapsed_ms(ev[0], ev[1]), "gpu_compute_ms": cuda.elapsed_ms(ev[1], ev[2]),
                     "d2h_ms": cuda.elapsed_ms(ev[2], ev[3])}
            times["latency_ms"] = times["h2d_ms"] + times["gpu_compute_ms"] + times["d2h_ms"]
        if self.cuda_graph and self._graph is None:
            self._capture()  # after a plain run at this shape, as trtexec does before capturing
        return outputs, times

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._infer(batch, timed=False)[0][self.output_names[0]]

    def _run_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._infer(batch, timed=False)[0]

    def run_timed(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """The first output (a classifier's logits) of one batch and its timings, all in milliseconds.

        ``h2d_ms``, ``gpu_compute_ms`` (CUDA events around ``execute_async_v3`` or the graph
        launch) and ``d2h_ms`` are trtexec's H2D latency, GPU compute time and D2H latency;
        ``latency_ms`` is their sum (trtexec's "Latency"); ``host_ms`` is the host wall time of
        the whole call (validation, host copies, sync). With ``cuda_graph`` the first call at a
        new batch shape also pays for the capture: warm up before measuring.
        """
        start = time.perf_counter()
        outputs, times = self._infer(self.check_input(batch), timed=True)
        times["host_ms"] = (time.perf_counter() - start) * 1e3
        return outputs[self.output_names[0]], times

    def close(self) -> None:
        """Free the graph, events, buffers and stream, then the context, engine and runtime; idempotent.

        Never raises: after a sticky CUDA error (an illegal address, say) every free fails, and
        stopping at the first would leak the rest and, in a ``with`` block, hide the error that
        caused it. Each failed free is logged and kept in ``close_errors`` (as NVIDIA's samples'
        ``DeviceMem.free`` swallows them).
        """
        graph, self._graph = self._graph, None
        stream, self._stream = self._stream, None
        items = [graph, *self._events, *self._buffers, stream]
        self._events, self._buffers = [], []
        for item in items:
            if item is None:
                continue
            try:
                item.free()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on whatever failed
                self.close_errors.append(str(exc))
                _log.warning("%s: %s while closing the TensorRT session", self.path, exc)
        # TensorRT objects go in reverse order of creation: context, engine, runtime.
        self._context = None
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            loaded.engine = None
            loaded.runtime = None
