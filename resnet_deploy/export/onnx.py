"""torch -> ONNX: dynamic batch, opset 18, one file, full check, onnxsim, parity vs PyTorch, manifest.

With evaluation data, PyTorch's answers on it are published beside the artifact as its recorded
reference (``recorded.py``), so devices without torch can measure parity against them.

Every export is verified: dynamo-exporter regressions have shipped (wrong results, batch frozen
at 1), so the published file is the one that ran in onnxruntime against PyTorch at two batch
sizes, and on evaluation data through the FP32 gate when data is given.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.export.artifact import check_outputs, publish_onnx, save_onnx
from resnet_deploy.manifest import BatchRange, InputSpec, Manifest, Preprocess, SizeRange, package_versions
from resnet_deploy.data import normalize
from resnet_deploy.parity import (
    FP32_DENSE_GATES,
    FP32_GATE,
    DenseGate,
    DenseParity,
    DenseParityAccumulator,
    Gate,
    Parity,
    ParityAccumulator,
    measure_dense_parity,
    measure_parity,
)
from resnet_deploy.recorded import ReferenceRecorder
from resnet_deploy.reference import TorchSession
from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

if TYPE_CHECKING:
    import onnx
    import torch

    from resnet_deploy.weights import LoadedModel

VERSIONED = ("torch", "onnx", "onnxscript", "onnxsim", "onnxruntime-gpu", "onnxruntime")


@dataclass(frozen=True)
class OnnxConfig:
    image_size: int | None = None  # crop size; None: the weights' preset, else 224
    resize: int | None = None  # short side before the crop; None: the preset, else image_size * 256 / 224
    max_batch: int = 64
    opset: int = 18  # parses on TensorRT 10.0+ (JetPack 6); 21+ does not everywhere
    input_format: str = "float"  # "float": NCHW normalised; "uint8": raw NHWC RGB, normalised in-graph
    simplify: bool = True
    gate: Gate = FP32_GATE  # classifiers; segmentation and backbones use parity.FP32_DENSE_GATES[task]
    # segment, backbone: the smallest and largest height or width the graph takes; None: the weights' own
    # bounds (the demo segmenter's), else 32 and 1024
    min_size: int | None = None
    max_size: int | None = None


@dataclass
class ExportResult:
    path: Path
    manifest: Manifest
    seconds: dict[str, float]


def with_uint8_input(model: torch.nn.Module, pp: Preprocess) -> torch.nn.Module:
    """``model`` behind a stem that takes raw uint8 NHWC RGB and normalises it in the graph."""
    import torch

    class Uint8Input(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            # x/255 - mean over std as one multiply-add: scale = 1/(255 std), shift = mean/std.
            std = torch.tensor(pp.std, dtype=torch.float32).view(1, 3, 1, 1)
            mean = torch.tensor(pp.mean, dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
            self.register_buffer("shift", mean / std, persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.permute(0, 3, 1, 2).to(torch.float32) * self.scale - self.shift)

    return Uint8Input().eval()


def onnx_from_torch(loaded: LoadedModel, output: str | os.PathLike[str], *, config: OnnxConfig = OnnxConfig(),
                    eval_source=None, overwrite: bool = False) -> ExportResult:
    """Export ``loaded`` to ``output`` (+ ``output.json``), verified against PyTorch; publish only on a pass."""
    output = check_outputs(output, overwrite=overwrite)
    if config.input_format not in ("float", "uint8"):
        raise UsageError(f"`input_format` must be float or uint8, got {config.input_format!r}")
    if not 1 <= config.max_batch <= 4096:
        raise UsageError(f"`max_batch` must be in 1..4096, got {config.max_batch}")
    if config.opset < 17 or config.opset > 20:
        raise UsageError(f"`opset` {config.opset}: use 17..20 (18 parses on every TensorRT from 10.0)")
    from resnet_deploy.weights import resolve_preprocess

    pp = resolve_preprocess(loaded, image_size=config.image_size, resize=config.resize)
    size = dense_size_range(pp, config, loaded.size) if loaded.task != "classify" else None
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    model = trace_to_onnx(loaded.model, pp, config, outputs=loaded.outputs, size=size)
    seconds["export_s"] = time.perf_counter() - t0
    check_onnx(model)
    ref = TorchSession(loaded.model, image_size=None if size else pp.crop, output_names=loaded.outputs)
    # Random images give near-tied logits on untrained nets: only the logit difference is gated there.
    gate: Gate | DenseGate = FP32_DENSE_GATES[loaded.task] if size else config.gate
    synthetic_gate = (DenseGate(max_rel_diff=gate.max_rel_diff) if size else Gate(max_rel_diff=gate.max_rel_diff))
    synthetic = _synthetic_dense_parity if size else _synthetic_parity
    parity: Parity | DenseParity
    with tempfile.TemporaryDirectory(prefix=".resnet-deploy-", dir=output.parent) as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(model, path)
        parity = synthetic(path, ref, pp, config.max_batch, size)
        parity.check(synthetic_gate, what="the exported graph (a torch.onnx exporter problem; try another `opset`)")
        if config.simplify:
            t0 = time.perf_counter()
            model = simplify(model)
            seconds["simplify_s"] = time.perf_counter() - t0
            save_onnx(model, path)
            parity = synthetic(path, ref, pp, config.max_batch, size)
            parity.check(synthetic_gate, what="the simplified graph (onnxsim changed the answers; retry with `simplify=False`)")
        recorded = None
        if eval_source is not None:
            t0 = time.perf_counter()
            with OnnxRuntimeSession(path, provider="cpu") as sess:
                if size:  # masks' class names are bound to the model's labels
                    parity = measure_dense_parity(ref, sess, eval_source.for_model(loaded), pp,
                                                  segment=loaded.task == "segment")
                else:  # classifiers also keep PyTorch's answers beside the artifact (recorded.py)
                    source = eval_source.for_model(loaded)
                    recorder = ReferenceRecorder(data=source.description, data_digest=source.digest(),
                                                 num_classes=loaded.num_classes)
                    parity = measure_parity(ref, sess, source, pp, batch_size=16, record=recorder.update)
                    found = recorder.result()
                    recorded = (found, found.to_bytes())
            seconds["parity_s"] = time.perf_counter() - t0
            parity.check(gate, what="the FP32 ONNX")  # type: ignore[arg-type]  # the gate matches the parity
    manifest = Manifest(
        arch=loaded.arch,
        num_classes=loaded.num_classes,
        labels=loaded.labels,
        precision="fp32",
        input=_input_spec(pp, config, dynamic=size is not None),
        preprocess=pp,
        batch=BatchRange(min=1, opt=min(8, config.max_batch), max=config.max_batch),
        output=_output_spec(loaded),
        source={"weights": loaded.weights.label, "weights_sha256": loaded.weights_sha256},
        parity={"reference": "pytorch", **parity.to_dict()},
        versions=package_versions(*VERSIONED),
        details={"opset": config.opset, "simplified": config.simplify},
        task=loaded.task,
        size=size,
    )
    final = publish_onnx(model, output, manifest, overwrite=overwrite, reference=recorded)
    return ExportResult(output, final, seconds)


def dense_size_range(pp: Preprocess, config: OnnxConfig, own: tuple[int, int] | None = None) -> SizeRange:
    """The height/width bounds of a segmentation or backbone graph: ``min_size..max_size`` (unset: the
    weights' ``own`` bounds, else 32..1024), tuned for 4:3 photos."""
    low, high = own or (32, 1024)
    low, high = config.min_size or low, config.max_size or high
    if not 32 <= low <= pp.resize <= high <= 8192:
        raise UsageError(f"need 32 <= `min_size` ({low}) <= `resize` ({pp.resize}) <= `max_size` ({high}) <= 8192")
    return SizeRange(min=low, opt=SizeRange.tuned(pp.resize, high), max=high)


def _output_spec(loaded: LoadedModel) -> dict:
    if loaded.task == "segment":
        return {"name": loaded.outputs[0], "layout": "NCHW", "size": "input"}
    if loaded.task == "backbone":
        from resnet_deploy.archs import STAGES

        index = [STAGES.index(n) for n in loaded.outputs]
        channels = loaded.model.channels  # type: ignore[attr-defined]
        return {"names": list(loaded.outputs), "strides": [4 * 2**i for i in index], "channels": [channels[i] for i in index]}
    return {"name": "logits"}


def _input_spec(pp: Preprocess, config: OnnxConfig, *, dynamic: bool = False) -> InputSpec:
    s = -1 if dynamic else pp.crop
    if config.input_format == "uint8":
        return InputSpec(dtype="uint8", layout="NHWC", shape=(-1, s, s, 3))
    return InputSpec(dtype="float32", layout="NCHW", shape=(-1, 3, s, s))


def trace_to_onnx(model: torch.nn.Module, pp: Preprocess, config: OnnxConfig, *,
                  outputs: tuple[str, ...] = ("logits",), size: SizeRange | None = None) -> onnx.ModelProto:
    """torch.onnx.export (dynamo) with a dynamic batch 1..max_batch (and height and width in ``size``), in memory."""
    import torch

    net = with_uint8_input(model, pp) if config.input_format == "uint8" else model.eval()
    h, w = size.opt if size else (pp.crop, pp.crop)
    # An example batch of 2: a batch of 1 would let the exporter specialise the batch dimension.
    if config.input_format == "uint8":
        example = torch.zeros(2, h, w, 3, dtype=torch.uint8)
    else:
        example = torch.zeros(2, 3, h, w)
    batch = torch.export.Dim("batch", min=1, max=max(config.max_batch, 2))
    dims = {0: batch}
    if size:
        hw = (1, 2) if config.input_format == "uint8" else (2, 3)
        dims |= {hw[0]: torch.export.Dim("height", min=size.min, max=size.max),
                 hw[1]: torch.export.Dim("width", min=size.min, max=size.max)}
    # The exporter logs a notice per missing torchvision op and warns about its own internals;
    # torch resets logger levels when it is imported, so this is set here, after the import.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(
                net, (example,), input_names=["input"], output_names=list(outputs), opset_version=config.opset,
                dynamic_shapes={"x": dims}, dynamo=True, external_data=False, verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; one line with its first
        raise DeployError(f"torch.onnx.export failed: {str(exc).splitlines()[0][:300]}") from exc
    return program.model_proto


def check_onnx(model: onnx.ModelProto) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise DeployError(f"the exported ONNX fails onnx.checker: {str(exc).splitlines()[0]}") from exc


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim with the batch left dynamic; its own check must pass."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises RuntimeError/ValueError from C++
        raise DeployError(f"onnxsim failed: {str(exc).splitlines()[0]} (retry with `simplify=False`)") from exc
    if not ok:
        raise DeployError("onnxsim could not validate the simplified model (retry with `simplify=False`)")
    check_onnx(simplified)
    return simplified


def _synthetic_dense_parity(path: Path, ref: TorchSession, pp: Preprocess, max_batch: int,
                            size: SizeRange | None) -> DenseParity:
    """ORT vs torch on seeded random images at batch 1 (the tuned size) and 3 (the smallest, another aspect)."""
    assert size is not None
    rng = np.random.default_rng(0)
    acc = DenseParityAccumulator("synthetic random images, batch 1 and 3, two sizes", ref.output_names, segment=False)
    with OnnxRuntimeSession(path, provider="cpu") as sess:
        for n, (h, w) in ((1, size.opt), (min(3, max_batch), (size.min, min(size.max, size.min + 24)))):
            images = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
            x = normalize(images, pp)
            acc.update(ref.run_outputs(x), sess.run_outputs(images if sess.input_dtype == "uint8" else x))
    return acc.result()


def _synthetic_parity(path: Path, ref: TorchSession, pp: Preprocess, max_batch: int, size: None = None) -> Parity:
    """ORT vs torch on seeded random images at batch 1 and 7: shapes the exporter must not have frozen."""
    rng = np.random.default_rng(0)
    acc = ParityAccumulator("synthetic random images, batch 1 and 7")
    with OnnxRuntimeSession(path, provider="cpu") as sess:
        for n in (1, min(7, max_batch)):
            images = rng.integers(0, 256, size=(n, pp.crop, pp.crop, 3), dtype=np.uint8)
            x = normalize(images, pp)
            acc.update(ref.run(x), sess.run(images if sess.input_dtype == "uint8" else x))
    return acc.result()
