"""ONNX Runtime session: providers cpu, cuda and tensorrt (ORT's TensorRT EP with its engine cache).

onnxruntime is imported when a session opens (``onnxruntime-gpu`` also runs the CPU provider).
A requested GPU provider that cannot start is an error here: onnxruntime itself would log a
warning and quietly run on the CPU, which would make every GPU figure a lie.

I/O binding: on the cuda and tensorrt providers the output is bound to a device buffer
allocated once per (thread, batch size) and the input is bound from host memory, so ORT
allocates nothing per call. On the CPU provider it is off by default: measured on ResNet-50,
batch 8, 2 threads, it changed throughput by under 1% (within noise);
``python benchmarks/session_overhead.py`` prints that comparison.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.errors import MissingDependencyError, UsageError, require
from resnet_deploy.manifest import METADATA_KEY, Manifest
from resnet_deploy.runtime.session import Session

_ORT_INSTALL = ("pip install onnxruntime-gpu (it also runs on CPUs), or onnxruntime on a CPU-only host; "
                "on Jetson use the onnxruntime-gpu wheel built for your JetPack")
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16"}


_WARNED_FLAVOURS: list[bool] = []


def warn_if_both_flavours() -> None:
    """Warn once when ``onnxruntime`` and ``onnxruntime-gpu`` are both installed.

    Both install the same ``onnxruntime`` package folder, so whichever came last overwrote the
    other's files and uninstalling either breaks the one left (pip cannot prevent it: on x86-64 the
    ``export`` extra brings onnxruntime-gpu and the ``cpu`` extra the CPU wheel).
    """
    from importlib.metadata import PackageNotFoundError, version

    if _WARNED_FLAVOURS:
        return
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    if len(found) == 2:
        import warnings

        _WARNED_FLAVOURS.append(True)
        warnings.warn(f"both {found[0]} and {found[1]} are installed and overwrite each other's files: "
                      "pip uninstall -y onnxruntime onnxruntime-gpu, then install one (docs/install.md)",
                      RuntimeWarning, stacklevel=3)


class OnnxRuntimeSession(Session):
    """An ONNX artifact on onnxruntime. Thread-safe: see ``resnet_deploy.runtime.session``.

    ``provider``: "cpu" | "cuda" | "tensorrt". ``threads``: intra-op threads (None: ORT's
    default, one per physical core). ``io_binding``: None picks per provider (on for cuda and
    tensorrt, off for cpu). ``trt_cache_dir``: where ORT's TensorRT EP keeps its engines and
    timing cache (default ``<model folder>/.ort-trt-cache``); engines there are executable
    code, so point it only at a folder you trust. ``optimize=False`` runs the graph as written
    (no graph optimizations): for measuring what a Q/DQ graph computes rather than how fast
    ORT runs it (onnxruntime 1.24's CPU optimizer miscomputes INT8 graphs with FP16 scales).

    A CPU INT8 artifact (``--target cpu``) opened on the cpu provider is checked against this
    host's CPU (``resnet_deploy.cpuinfo``): outside the kernel families its manifest says it is
    exact on, a one-line RuntimeWarning names the risk; ``strict_cpu=True`` refuses it
    (UsageError) instead. ``int8_host`` holds the verdict (None where nothing was checked).
    """

    backend = "onnxruntime"
    thread_safe = True

    def __init__(self, path: str | os.PathLike[str], *, manifest: Manifest | None = None, provider: str = "cpu",
                 threads: int | None = None, io_binding: bool | None = None, device_id: int = 0,
                 trt_cache_dir: str | os.PathLike[str] | None = None, optimize: bool = True,
                 strict_cpu: bool = False) -> None:
        if provider not in PROVIDERS:
            raise UsageError(f"unknown provider {provider!r} (choose from {', '.join(PROVIDERS)})")
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        ort = require("onnxruntime", install=_ORT_INSTALL)
        warn_if_both_flavours()
        if PROVIDERS[provider] not in (built := ort.get_available_providers()):
            raise MissingDependencyError(
                f"this onnxruntime build has no {PROVIDERS[provider]} (it has {', '.join(built)}): install "
                f"onnxruntime-gpu in its place (on Jetson, the onnxruntime-gpu wheel built for your JetPack)")
        self.path = Path(path)
        self.provider = provider
        self.threads = threads
        self.device_id = device_id
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                         else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1  # one sequential graph: a second pool would only compete for cores
        self.session_options = opts
        providers = ort_providers(provider, model=self.path, manifest=manifest, device_id=device_id,
                                  trt_cache_dir=trt_cache_dir)
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise UsageError(f"{self.path}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0]})") from exc
        active = self._session.get_providers()
        if PROVIDERS[provider] not in active:
            # ORT logs the reason and falls back to the CPU; a silent fallback is never a result.
            raise MissingDependencyError(
                f"onnxruntime could not start {PROVIDERS[provider]} here and fell back to {', '.join(active)} "
                f"(no usable GPU, or its CUDA/cuDNN{'/TensorRT' if provider == 'tensorrt' else ''} libraries are "
                f"missing; see the log above); use provider='cpu' or install them"
            )
        self._read_io()
        self.manifest = manifest if manifest is not None else self._embedded_manifest()
        self.int8_host = None
        if self.manifest is not None:
            self._check_manifest(self.manifest)
            self._check_cpu(self.manifest, strict=strict_cpu)
        self.io_binding = provider != "cpu" if io_binding is None else bool(io_binding)
        self._device = "cpu" if provider == "cpu" else "cuda"
        self._local = threading.local()  # per-thread IOBinding and output buffers

    # ------------------------------------------------------------------ setup

    def _read_io(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise UsageError(f"{self.path}: expected one input and a logits output, "
                             f"found {len(inputs)} inputs and {len(outputs)} outputs")
        inp, out = inputs[0], outputs[0]
        if inp.type not in _ORT_DTYPES:
            raise UsageError(f"{self.path}: unsupported input type {inp.type} (float32, float16 or uint8)")
        self.input_name = inp.name
        self.input_dtype = _ORT_DTYPES[inp.type]
        self.sample_shape = tuple(d if isinstance(d, int) else None for d in inp.shape[1:])
        if isinstance(inp.shape[0], int):  # a graph exported with a fixed batch
            self.min_batch = self.max_batch = inp.shape[0]
        self.output_name = out.name
        self.output_names = tuple(o.name for o in outputs)
        self._output_dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(out.type)
        # Known class count: outputs can be pre-allocated per batch size (I/O binding).
        self._num_classes = out.shape[1] if len(out.shape) == 2 and isinstance(out.shape[1], int) else None

    def _embedded_manifest(self) -> Manifest | None:
        """The manifest in the ONNX ``metadata_props``, read through onnxruntime (no onnx import)."""
        text = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        return None if text is None else Manifest.from_json(text, origin=f"{self.path} metadata")

    def _check_manifest(self, m: Manifest) -> None:
        """A sidecar that belongs to another artifact would preprocess wrongly: refuse it."""
        want = tuple(None if d < 0 else d for d in m.input.shape[1:])
        fits = len(want) == len(self.sample_shape) and all(
            a is None or b is None or a == b for a, b in zip(want, self.sample_shape))
        if m.input.dtype != self.input_dtype or m.input.name != self.input_name or not fits:
            model = ", ".join("?" if d is None else str(d) for d in self.sample_shape)
            raise UsageError(f"{self.path}: its manifest describes input {m.input.name!r} {m.input.dtype} "
                             f"{list(m.input.shape)} but the model takes {self.input_name!r} {self.input_dtype} "
                             f"(N, {model}); is the manifest another artifact's?")
        if self._num_classes is not None and (m.num_classes != self._num_classes
                                              or (m.labels is not None and len(m.labels) != self._num_classes)):
            raise UsageError(f"{self.path}: its manifest says {m.num_classes} classes"
                             f"{'' if m.labels is None else f' ({len(m.labels)} labels)'} but the model outputs "
                             f"{self._num_classes}; is the manifest another artifact's?")
        if m.task != "classify" and m.output_names != self.output_names:
            raise UsageError(f"{self.path}: its manifest names outputs {m.output} but the model has "
                             f"{list(self.output_names)}; is the manifest another artifact's?")
        self.sample_shape = tuple(a if b is None else b for a, b in zip(want, self.sample_shape))
        self.size_range = m.size
        self.min_batch = max(self.min_batch, m.batch.min)
        self.max_batch = m.batch.max if self.max_batch is None else min(self.max_batch, m.batch.max)

    def _check_cpu(self, m: Manifest, *, strict: bool) -> None:
        """Does this CPU compute the INT8 graph as the host its gate held on did? Warn, or refuse when strict."""
        if self.provider != "cpu" or m.precision != "int8" or (m.details or {}).get("target") != "cpu":
            return
        from resnet_deploy import cpuinfo

        self.int8_host = fit = cpuinfo.check_int8_host((m.details or {}).get("cpu"), cpuinfo.host_cpu())
        if strict and fit.message is not None:  # not ok, or not checkable here
            raise UsageError(f"{self.path}: {fit.message} (refused: strict_cpu)")
        if fit.ok:
            return
        import warnings

        warnings.warn(f"{self.path.name}: {fit.message}", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ inference

    @property
    def description(self) -> str:
        threads = "" if self.threads is None else f", {self.threads} threads"
        binding = ", io binding" if self.io_binding else ""
        return f"onnxruntime {self.provider}{threads}{binding}"

    @property
    def raw(self):
        """The underlying ``onnxruntime.InferenceSession``."""
        return self._session

    def _run(self, batch: np.ndarray) -> np.ndarray:
        session = self._session
        if session is None:
            raise UsageError(f"{self.path}: the session is closed")
        if self.io_binding:
            return self._run_bound(session, batch)
        (logits,) = session.run([self.output_name], {self.input_name: batch})
        return logits

    def _run_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise UsageError(f"{self.path}: the session is closed")
        return dict(zip(self.output_names, session.run(list(self.output_names), {self.input_name: batch})))

    def _run_bound(self, session, batch: np.ndarray) -> np.ndarray:
        local = self._local
        binding = getattr(local, "binding", None)
        if binding is None:
            binding = local.binding = session.io_binding()
            local.outputs = {}
        binding.bind_cpu_input(self.input_name, batch)
        n = len(batch)
        if self._num_classes is not None and self._output_dtype is not None:
            out = local.outputs.get(n)
            if out is None:
                import onnxruntime as ort

                out = local.outputs[n] = ort.OrtValue.ortvalue_from_shape_and_type(
                    (n, self._num_classes), self._output_dtype, self._device, self.device_id)
            binding.bind_ortvalue_output(self.output_name, out)
        else:
            binding.bind_output(self.output_name, self._device, self.device_id)
        session.run_with_iobinding(binding)
        # A fresh host array every call: the bound buffer is reused by the next call.
        (logits,) = binding.copy_outputs_to_cpu()
        return logits

    def close(self) -> None:
        self._session = None
        self._local = threading.local()


def ort_providers(provider: str, *, model: Path, manifest: Manifest | None = None, device_id: int = 0,
                  trt_cache_dir: str | os.PathLike[str] | None = None) -> list[Any]:
    """The ``providers`` list for ``onnxruntime.InferenceSession``: the chosen one first, the CPU last.

    For "tensorrt": the engine and timing caches (created here), the precision flags the
    artifact needs, and one optimization profile over the manifest's batch range.
    """
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    cache = Path(trt_cache_dir) if trt_cache_dir is not None else model.parent / ".ort-trt-cache"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{cache}: cannot create the TensorRT engine cache ({exc.strerror}); pass trt_cache_dir=") from exc
    precision = manifest.precision if manifest is not None else "fp32"
    trt: dict[str, Any] = {
        "device_id": device_id,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        # ORT builds a weakly typed TensorRT network: Q/DQ nodes need the INT8 flag (without it
        # the build fails: "int8 is not configured in the builder"), Cast-to-FP16 graphs the FP16
        # flag. FP32 artifacts get neither, so TensorRT keeps them FP32.
        "trt_fp16_enable": precision == "fp16",
        "trt_int8_enable": precision == "int8",
    }
    if manifest is not None and all(d > 0 for d in manifest.input.shape[1:]):
        # One explicit profile over the manifest's batch range: without it the EP rebuilds its
        # engine whenever a batch larger than any seen before arrives.
        name, dims = manifest.input.name, "x".join(str(d) for d in manifest.input.shape[1:])
        b = manifest.batch
        trt |= {"trt_profile_min_shapes": f"{name}:{b.min}x{dims}",
                "trt_profile_opt_shapes": f"{name}:{b.opt}x{dims}",
                "trt_profile_max_shapes": f"{name}:{b.max}x{dims}"}
    return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]
