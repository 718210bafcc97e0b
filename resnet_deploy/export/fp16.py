"""FP32 ONNX -> FP16 ONNX with ModelOpt AutoCast, FP32 inputs and outputs kept, gated against PyTorch.

AutoCast converts every node it judges safe to FP16 and leaves in FP32 the ones whose
activations or weights would overflow FP16 (beyond ``data_max`` = 512 or the FP16 range). It
judges activations on reference runs: on real calibration samples when given (``calib_source``,
written as the ``.npz`` AutoCast's API takes), otherwise on random inputs. Its reference runner
keeps every activation of every sample in memory (ResNet-50 at 224x224: 3.2 GiB peak with 16
samples, 4.8 GiB with 32, measured), so it gets at most 8 samples at 224x224, more for smaller
images (``AUTOCAST_PIXELS``); ranges need a few real samples, not statistics.

Segmentation and backbone graphs take any height and width; their calibration samples are the
center squares ``calibration.readers`` cuts at the short side ``resize``, so the sample count
follows that area. (AutoCast's random-input fallback would pick sizes itself; pass real samples.)

Inputs and outputs stay FP32 (``keep_io_types``): an application feeds the FP16 model the same
arrays as the FP32 one. The result must pass the task's FP16 gate against the PyTorch model on
held-out data (classifiers: top-1 agreement >= 99.5%, drop <= 0.2 points; segmentation and
backbones: ``parity.FP16_DENSE_GATES``, image by image at each image's own size); otherwise
nothing is published.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.calibration.readers import spool_calibration
from resnet_deploy.calibration.workspace import private_copy, tool_scope
from resnet_deploy.errors import DeployError, require
from resnet_deploy.export.onnx import ExportResult
from resnet_deploy.export.stage import derived_stage, onnx_opset
from resnet_deploy.parity import DenseGate, Gate, measure_task_parity, task_gate

if TYPE_CHECKING:
    import onnx

    from resnet_deploy.calibration.readers import CalibrationSet
    from resnet_deploy.data import DataSource
    from resnet_deploy.manifest import Manifest

AUTOCAST_PIXELS = 8 * 224 * 224  # samples x image area AutoCast's reference run may hold (about 2 GiB for ResNet-50)
_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16


@dataclass(frozen=True)
class Fp16Config:
    gate: Gate | DenseGate | None = None  # None: the task's (parity.FP16_GATE, parity.FP16_DENSE_GATES[task])
    max_calibration: int | None = None  # samples AutoCast runs on; None: AUTOCAST_PIXELS / image area


def autocast_samples(image_size: int, requested: int, config: Fp16Config = Fp16Config()) -> int:
    """How many calibration samples AutoCast gets: memory grows with each one."""
    limit = config.max_calibration or max(1, AUTOCAST_PIXELS // (image_size * image_size))
    return min(requested, limit)


def fp16_from_onnx(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], *,
                   config: Fp16Config = Fp16Config(), calib_source: DataSource | None = None,
                   eval_source: DataSource | None = None, overwrite: bool = False, debug: bool = False) -> ExportResult:
    """Convert the FP32 ``onnx_path`` to FP16 at ``output`` (+ ``output.json``); publish only if the gate holds.

    ``calib_source``: samples AutoCast measures activation ranges on (None: random inputs).
    ``eval_source``: held-out data for the gate (default: digits:eval for the demo weights).
    """
    t_start = time.perf_counter()
    require("modelopt.onnx.autocast", install="pip install 'nvidia-modelopt[onnx]'")
    import onnx

    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    seconds: dict[str, float] = {}
    with derived_stage(onnx_path, output, what="FP16", eval_source=eval_source, overwrite=overwrite) as stage:
        parent, work = stage.parent, stage.work
        gate = task_gate(parent.task, "fp16", config.gate)
        calibration, npz = None, None
        if calib_source is not None:
            cset = spool_calibration(calib_source.for_model(parent), parent.preprocess, work)
            used = autocast_samples(cset.side, cset.count, config)
            if used < cset.count:
                warnings.warn(f"AutoCast keeps every activation of every sample in memory: it measures ranges on the "
                              f"first {used} of {cset.count} calibration samples at {cset.side}x{cset.side}",
                              stacklevel=2)
            npz = _write_npz(cset, parent, work / "calibration.npz", limit=used)
            calibration = cset.summary("autocast ranges", limit=used)
        t0 = time.perf_counter()
        model = _autocast(private_copy(stage.onnx_path, work), npz, work, debug=debug)
        seconds["convert_s"] = time.perf_counter() - t0
        _check_io(model, parent)
        candidate = work / "fp16.onnx"
        onnx.save_model(model, str(candidate))
        t0 = time.perf_counter()
        with OnnxRuntimeSession(candidate, manifest=parent, provider="cpu") as sess:
            parity = measure_task_parity(stage.reference, sess, stage.eval_source, parent,
                                         batch_size=min(32, parent.batch.max))
        seconds["parity_s"] = time.perf_counter() - t0
        parity.check(gate, what="the FP16 ONNX")  # type: ignore[arg-type]  # the gate fits the parity
        manifest = stage.manifest("fp16", model, parity=parity, calibration=calibration, details=_details(model, calibration))
        final = stage.publish(model, manifest)
    seconds["total_s"] = time.perf_counter() - t_start
    return ExportResult(stage.output, final, seconds)


def _write_npz(cset: CalibrationSet, parent: Manifest, path: Path, *, limit: int) -> Path:
    """The set as AutoCast's ``calibration_data``: one array under the input's name (it splits it per sample)."""
    arrays = list(cset.inputs(parent.input.dtype, parent.preprocess, batch_size=64, limit=limit))
    np.savez(path, **{parent.input.name: np.concatenate(arrays)})
    return path


def _autocast(parent: Path, npz: Path | None, work: Path, *, debug: bool) -> onnx.ModelProto:
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tool_scope(work, debug=debug) as log:
        try:
            return convert_to_mixed_precision(onnx_path=str(parent), low_precision_type="fp16", keep_io_types=True,
                                              calibration_data=None if npz is None else str(npz))
        except Exception as exc:  # AutoCast raises AssertionError/ValueError/ORT and polygraphy errors
            text = str(exc).strip()
            raise DeployError(f"ModelOpt AutoCast failed: {(text.splitlines() or [type(exc).__name__])[0][:300]}"
                              + (f" (its last output: {log.tail()})" if log.tail() else "")) from exc


def _check_io(model: onnx.ModelProto, parent: Manifest) -> None:
    """FP32 in and out, as asked (uint8 input for a uint8 parent), every output; and something actually became FP16."""
    want_in = _FLOAT if parent.input.dtype == "float32" else 2  # TensorProto.UINT8
    got_in = [i.type.tensor_type.elem_type for i in model.graph.input]
    got_out = [o.type.tensor_type.elem_type for o in model.graph.output]
    if got_in != [want_in] or not got_out or set(got_out) != {_FLOAT}:
        raise DeployError(f"AutoCast changed the model's I/O types (inputs {got_in}, outputs {got_out}); "
                          "expected them kept as in the FP32 model")
    if not any(init.data_type == _FLOAT16 for init in model.graph.initializer):
        raise DeployError("AutoCast converted nothing to FP16 (every weight is still FP32)")


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Compute nodes AutoCast left in FP32 (an FP32 output), for the manifest."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    return [n.name for n in inferred.graph.node
            if n.op_type not in ("Cast", "Constant") and n.output and types.get(n.output[0]) == _FLOAT]


def _details(model: onnx.ModelProto, calibration: dict | None) -> dict:
    """The FP16 manifest's ``details``: what AutoCast converted and what it kept."""
    n16 = sum(1 for i in model.graph.initializer if i.data_type == _FLOAT16)
    return {
        "converter": "ModelOpt AutoCast",
        "keep_io_types": True,
        "opset": onnx_opset(model),
        "calibration": "real samples" if calibration else "random inputs (AutoCast's default)",
        "fp16_initializers": n16,
        "fp32_initializers": sum(1 for i in model.graph.initializer if i.data_type == _FLOAT),
        "fp32_nodes": fp32_nodes(model),
    }
