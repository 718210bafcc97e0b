"""The PyTorch model as a Session: the reference every artifact is compared with, and a benchmark backend."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.errors import UsageError
from resnet_deploy.runtime.session import Session

if TYPE_CHECKING:
    import torch

    from resnet_deploy.manifest import Manifest


class TorchSession(Session):
    """Runs an ``nn.Module`` on float32 NCHW batches (eval mode, no grad).

    ``precision="fp16"`` casts the model and the input to half (CUDA only: CPU half convolutions
    are slow and not what deployments use); ``channels_last`` is the fast layout on GPUs;
    ``cuda_graph`` captures one CUDA graph per input shape and replays it (CUDA only).
    """

    backend = "torch"

    def __init__(self, model: torch.nn.Module, *, image_size: int | None, manifest: Manifest | None = None,
                 device: str = "cpu", precision: str = "fp32", channels_last: bool = False,
                 threads: int | None = None, cuda_graph: bool = False,
                 output_names: tuple[str, ...] = ("logits",)) -> None:
        import torch

        if precision not in ("fp32", "fp16"):
            raise UsageError(f"precision must be fp32 or fp16, got {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"`device` {device}: no CUDA device is visible to torch")
        if precision == "fp16" and not device.startswith("cuda"):
            raise UsageError("`precision` fp16 needs `device` cuda")
        if cuda_graph and not device.startswith("cuda"):
            raise UsageError("`cuda_graph` needs `device` cuda")
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = threads
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.precision = precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, self.dtype, memory_format=self.memory_format)
        self.manifest = manifest
        self.input_dtype = "float32"
        self.sample_shape = (3, image_size, image_size)  # None: any height and width (segment, backbone)
        self.output_names = output_names
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple[int, ...], tuple] = {}  # input shape -> (graph, static input, static output)

    @property
    def description(self) -> str:
        layout = ", channels_last" if self.memory_format is self.torch.channels_last else ""
        layout += ", CUDA graph" if self.cuda_graph else ""
        threads = f", {self.threads} threads" if self.threads else ""
        return f"torch {self.device.type} {self.precision}{layout}{threads}"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            if self.cuda_graph:
                return self._replay(torch.from_numpy(batch)).float().cpu().numpy()
            x = torch.from_numpy(batch).to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
            out = self.model(x)
            return (out[0] if isinstance(out, tuple) else out).float().cpu().numpy()  # a backbone's: its first

    def _run_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name: a backbone returns a tuple of stage outputs, other models one tensor."""
        torch = self.torch
        if self.cuda_graph:
            return super()._run_outputs(batch)
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
            out = self.model(x)
        outs = out if isinstance(out, tuple) else (out,)
        return {name: t.float().cpu().numpy() for name, t in zip(self.output_names, outs)}

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        """Copy ``x`` into the graph captured for its shape (capturing it on first use) and replay it."""
        torch = self.torch
        key = tuple(x.shape)
        if key not in self._graphs:
            static_in = torch.empty(key, device=self.device, dtype=self.dtype).contiguous(memory_format=self.memory_format)
            static_in.copy_(x)
            # Warm up on a side stream before capture, as torch.cuda.graphs' documentation requires.
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.model(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)  # host -> device and cast, into the captured input's memory
        graph.replay()
        return static_out

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def reference_from_manifest(manifest: Manifest, parent_path: str | os.PathLike[str] | None = None, *,
                            device: str = "cpu", threads: int | None = None) -> TorchSession:
    """The PyTorch model an artifact was made from, rebuilt from its manifest's arch and weights.

    ``parent_path`` is the artifact (or its parent ONNX): a relative checkpoint path in the
    manifest is looked up beside it. The rebuilt weights must hash to the manifest's
    ``weights_sha256``, so parity is never measured against a different model.
    """
    import warnings
    from pathlib import Path

    from resnet_deploy.weights import Weights, load_model

    where = str(parent_path) if parent_path is not None else "the artifact"
    weights = Weights.of(manifest)
    if weights is None:
        raise UsageError(f"{where}: its manifest does not say which weights it came from; pass a `reference`")
    if weights.path is not None:
        path = weights.path
        if not path.is_file() and not path.is_absolute() and parent_path is not None:
            path = Path(parent_path).parent / path
        if not path.is_file():
            raise UsageError(f"{where}: the weights it was made from ({weights}) are not here; pass a `reference`")
        weights = Weights.parse(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no weights given": the manifest says the export was untrained
        dense = manifest.task != "classify"
        loaded = load_model(manifest.arch, weights, num_classes=manifest.num_classes or None, task=manifest.task,
                            outputs=tuple(manifest.output["names"]) if manifest.task == "backbone" else None)
    expected = manifest.source.get("weights_sha256")
    if expected and loaded.weights_sha256 != expected:
        raise UsageError(f"{where}: the weights {weights} differ from those it was made from "
                         f"(sha256 {loaded.weights_sha256[:12]}..., manifest {expected[:12]}...); pass a `reference`")
    return TorchSession(loaded.model, image_size=None if dense else manifest.preprocess.crop, manifest=None,
                        device=device, threads=threads, output_names=loaded.outputs)


def reference_or_parent(manifest: Manifest, onnx_parent_path: str | os.PathLike[str], *,
                        threads: int | None = None) -> tuple[Session, str]:
    """The PyTorch reference rebuilt from ``manifest``, else the FP32 ONNX parent; and a label saying which.

    The label goes into the child artifact's ``parity.reference``: ``"pytorch"``, or
    ``"onnx-fp32 <file> (PyTorch weights not rebuilt: <why>)"`` when the weights moved, differ
    from ``weights_sha256``, or cannot be downloaded. The parent passed its own FP32 gate against
    PyTorch when it was exported, so it is the next best reference.
    """
    from pathlib import Path

    from resnet_deploy.errors import DeployError
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    try:
        return reference_from_manifest(manifest, onnx_parent_path, threads=threads), "pytorch"
    except DeployError as exc:
        if manifest.precision != "fp32":
            raise
        why = str(exc).removesuffix("; pass a `reference`")
        session = OnnxRuntimeSession(onnx_parent_path, manifest=manifest, provider="cpu", threads=threads)
        return session, f"onnx-fp32 {Path(onnx_parent_path).name} (PyTorch weights not rebuilt: {why})"
