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
from resnet_deploy.manifest import BatchRange, InputSpec, Manifest, Preprocess, package_versions
from resnet_deploy.data import normalize
from resnet_deploy.parity import FP32_GATE, Gate, Parity, ParityAccumulator, measure_parity
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
    gate: Gate = FP32_GATE


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
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    model = trace_to_onnx(loaded.model, pp, config)
    seconds["export_s"] = time.perf_counter() - t0
    check_onnx(model)
    ref = TorchSession(loaded.model, image_size=pp.crop)
    # Random images give near-tied logits on untrained nets: only the logit difference is gated there.
    synthetic_gate = Gate(max_rel_diff=config.gate.max_rel_diff)
    with tempfile.TemporaryDirectory(prefix=".resnet-deploy-", dir=output.parent) as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(model, path)
        parity = _synthetic_parity(path, ref, pp, config.max_batch)
        parity.check(synthetic_gate, what="the exported graph (a torch.onnx exporter problem; try another `opset`)")
        if config.simplify:
            t0 = time.perf_counter()
            model = simplify(model)
            seconds["simplify_s"] = time.perf_counter() - t0
            save_onnx(model, path)
            parity = _synthetic_parity(path, ref, pp, config.max_batch)
            parity.check(synthetic_gate, what="the simplified graph (onnxsim changed the answers; retry with `simplify=False`)")
        recorded = None
        if eval_source is not None:
            t0 = time.perf_counter()
            recorder = ReferenceRecorder(data=eval_source.description, data_digest=eval_source.digest(),
                                         num_classes=loaded.num_classes)
            with OnnxRuntimeSession(path, provider="cpu") as sess:
                parity = measure_parity(ref, sess, eval_source, pp, batch_size=16, record=recorder.update)
            seconds["parity_s"] = time.perf_counter() - t0
            parity.check(config.gate, what="the FP32 ONNX")
            found = recorder.result()
            recorded = (found, found.to_bytes())
    manifest = Manifest(
        arch=loaded.arch,
        num_classes=loaded.num_classes,
        labels=loaded.labels,
        precision="fp32",
        input=_input_spec(pp, config),
        preprocess=pp,
        batch=BatchRange(min=1, opt=min(8, config.max_batch), max=config.max_batch),
        source={"weights": loaded.weights.label, "weights_sha256": loaded.weights_sha256},
        parity={"reference": "pytorch", **parity.to_dict()},
        versions=package_versions(*VERSIONED),
        details={"opset": config.opset, "simplified": config.simplify},
    )
    final = publish_onnx(model, output, manifest, reference=recorded)
    return ExportResult(output, final, seconds)


def _input_spec(pp: Preprocess, config: OnnxConfig) -> InputSpec:
    s = pp.crop
    if config.input_format == "uint8":
        return InputSpec(dtype="uint8", layout="NHWC", shape=(-1, s, s, 3))
    return InputSpec(dtype="float32", layout="NCHW", shape=(-1, 3, s, s))


def trace_to_onnx(model: torch.nn.Module, pp: Preprocess, config: OnnxConfig) -> onnx.ModelProto:
    """torch.onnx.export (dynamo) with a dynamic batch 1..max_batch, returned in memory."""
    import torch

    net = with_uint8_input(model, pp) if config.input_format == "uint8" else model.eval()
    s = pp.crop
    # An example batch of 2: a batch of 1 would let the exporter specialise the batch dimension.
    if config.input_format == "uint8":
        example = torch.zeros(2, s, s, 3, dtype=torch.uint8)
    else:
        example = torch.zeros(2, 3, s, s)
    batch = torch.export.Dim("batch", min=1, max=max(config.max_batch, 2))
    # The exporter logs a notice per missing torchvision op and warns about its own internals;
    # torch resets logger levels when it is imported, so this is set here, after the import.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(
                net, (example,), input_names=["input"], output_names=["logits"], opset_version=config.opset,
                dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=False, verbose=False,
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


def _synthetic_parity(path: Path, ref: TorchSession, pp: Preprocess, max_batch: int) -> Parity:
    """ORT vs torch on seeded random images at batch 1 and 7: shapes the exporter must not have frozen."""
    rng = np.random.default_rng(0)
    acc = ParityAccumulator("synthetic random images, batch 1 and 7")
    with OnnxRuntimeSession(path, provider="cpu") as sess:
        for n in (1, min(7, max_batch)):
            images = rng.integers(0, 256, size=(n, pp.crop, pp.crop, 3), dtype=np.uint8)
            x = normalize(images, pp)
            acc.update(ref.run(x), sess.run(images if sess.input_dtype == "uint8" else x))
    return acc.result()
