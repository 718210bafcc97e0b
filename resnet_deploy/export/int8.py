"""FP32 ONNX -> INT8 ONNX with explicit Q/DQ, calibrated on real data, gated against PyTorch, then published.

The work is ``resnet_deploy.calibration``'s (quantizers, placement checks, accuracy fallback,
cache); this stage adds what publishing needs: options checked before any work, a private work
folder inside the output folder (removed on success and failure alike, so nothing is left
behind), the child manifest, and the atomic write. Nothing is published when the gate is missed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from resnet_deploy.calibration.gate import Int8Config, quantize_to_gate
from resnet_deploy.calibration.readers import spool_calibration
from resnet_deploy.calibration.targets import TARGETS
from resnet_deploy.calibration.workspace import private_copy
from resnet_deploy.export.onnx import ExportResult
from resnet_deploy.export.stage import derived_stage, onnx_opset
from resnet_deploy.parity import task_gate

if TYPE_CHECKING:
    from resnet_deploy.data import DataSource


def int8_from_onnx(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], *, calib_source: DataSource,
                   config: Int8Config = Int8Config(), eval_source: DataSource | None = None, overwrite: bool = False,
                   debug: bool = False, log: Callable[[str], None] | None = None) -> ExportResult:
    """Quantize the FP32 ``onnx_path`` to INT8 at ``output`` (+ ``output.json``); publish only if the gate holds.

    ``calib_source``: the calibration samples (open with ``split="train"``, so digits calibrate on
    their train part; a segmentation or backbone parent calibrates on the center square of each
    image at its ``resize``, ``calibration.readers``). ``eval_source``: held-out data for the gate
    (default: the demo weights' own), labelled for a classifier. Raises GateError (nothing
    published) when the task's gate (``config.gate``, else ``parity.INT8_GATE`` or
    ``INT8_DENSE_GATES[task]``) misses even with the allowed layers kept in high precision.
    """
    import onnx

    t_start = time.perf_counter()
    config.validate()
    with derived_stage(onnx_path, output, what="INT8", eval_source=eval_source, overwrite=overwrite,
                       labels=True) as stage:
        parent, work = stage.parent, stage.work
        cset = spool_calibration(calib_source.for_model(parent), parent.preprocess, work)
        result = quantize_to_gate(private_copy(stage.onnx_path, work), stage.parent_sha256, parent, cset,
                                  reference=stage.reference, eval_source=stage.eval_source, workdir=work, config=config,
                                  debug=debug, log=log)
        model = onnx.load(str(result.path))
        manifest = stage.manifest("int8", model, parity=result.parity, calibration=cset.summary(config.method),
                                  details=_details(model, result, config, task=parent.task))
        final = stage.publish(model, manifest)
    seconds = {**result.seconds, "total_s": time.perf_counter() - t_start}
    return ExportResult(stage.output, final, seconds)


def _precisions(config: Int8Config) -> dict[str, str]:
    """The manifest's ``activations`` and ``weights``: the target's, refined by the cpu variant."""
    if config.target == "cpu":
        from resnet_deploy.calibration.cpu import VARIANTS

        return VARIANTS[config.cpu_variant].precisions()
    return {"activations": TARGETS[config.target].activations, "weights": "int8 symmetric per output channel"}


def _details(model, result, config: Int8Config, *, task: str) -> dict:
    """The INT8 manifest's ``details``: the target's quantizer, what was kept, the gate and its attempts."""
    target = TARGETS[config.target]
    details = {
        "target": config.target,
        "quantizer": target.quantizer,
        **_precisions(config),
        "high_precision": config.high_precision,
        "opset": onnx_opset(model),
        "kept_high_precision": result.kept,
        "structure": result.structure,
        "gate": dataclasses.asdict(task_gate(task, "int8", config.gate)),
        "attempts": [a.to_dict() for a in result.attempts],
    }
    if config.target == "cpu":
        from resnet_deploy.calibration.cpu import VARIANTS

        # What the gate assumed: the variant, the CPU families it is exact on, the host it held on.
        details["cpu"] = VARIANTS[config.cpu_variant].record()
    if result.sensitivity is not None:
        # The ranking the fallback used (most sensitive first), as far as it went and a little further.
        details["sensitivity"] = [s.to_dict() for s in result.sensitivity[:max(8, 2 * len(result.kept))]]
    return details
