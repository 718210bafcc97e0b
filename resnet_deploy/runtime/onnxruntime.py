"""ONNX Runtime session: providers cpu, cuda and tensorrt (ORT's TensorRT EP with its engine cache)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from resnet_deploy.errors import MissingDependencyError, UsageError, require
from resnet_deploy.manifest import Manifest
from resnet_deploy.runtime.session import Session

_ORT_INSTALL = "pip install onnxruntime-gpu (it also runs on CPUs), or onnxruntime on a CPU-only host"
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16"}


class OnnxRuntimeSession(Session):
    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, manifest: Manifest | None = None, provider: str = "cpu",
                 threads: int | None = None, trt_cache_dir: str | os.PathLike[str] | None = None) -> None:
        ort = require("onnxruntime", install=_ORT_INSTALL)
        if provider not in PROVIDERS:
            raise UsageError(f"unknown provider {provider!r} (choose from {', '.join(PROVIDERS)})")
        available = ort.get_available_providers()
        if PROVIDERS[provider] not in available:
            raise MissingDependencyError(
                f"onnxruntime provider {PROVIDERS[provider]} is not available here (available: {', '.join(available)})"
            )
        self.path = Path(path)
        self.manifest = manifest
        self.provider = provider
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if threads < 1:
                raise UsageError(f"threads must be at least 1, got {threads}")
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.threads = threads
        providers: list = [PROVIDERS[provider]]
        if provider == "tensorrt":
            cache = Path(trt_cache_dir) if trt_cache_dir else self.path.parent / ".ort-trt-cache"
            cache.mkdir(parents=True, exist_ok=True)
            providers = [
                ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                               "trt_timing_cache_enable": True}),
                "CUDAExecutionProvider",
            ]
        if provider != "cpu":
            providers.append("CPUExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise UsageError(f"{self.path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from exc
        (inp,) = self._session.get_inputs()
        self.input_name = inp.name
        if inp.type not in _ORT_DTYPES:
            raise UsageError(f"{self.path}: unsupported input type {inp.type}")
        self.input_dtype = _ORT_DTYPES[inp.type]
        self.sample_shape = tuple(d if isinstance(d, int) else None for d in inp.shape[1:])
        self.output_name = self._session.get_outputs()[0].name
        if manifest is not None:
            self.min_batch, self.max_batch = manifest.batch.min, manifest.batch.max

    @property
    def description(self) -> str:
        threads = "" if self.threads is None else f", {self.threads} threads"
        return f"onnxruntime {self.provider}{threads}"

    @property
    def raw(self):
        """The underlying ``onnxruntime.InferenceSession``."""
        return self._session

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self._session.run([self.output_name], {self.input_name: batch})
        return logits

    def close(self) -> None:
        self._session = None
