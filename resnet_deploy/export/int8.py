"""FP32 ONNX -> INT8 ONNX with explicit Q/DQ, calibrated on real data, gated against PyTorch, then published.

The work is ``resnet_deploy.calibration``'s (quantizers, placement checks, accuracy fallback,
cache); this stage adds what publishing needs: options checked before any work, a private work
folder inside the output folder (removed on success and failure alike, so nothing is left
behind), the child manifest, and the atomic write. Nothing is published when the gate is missed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from resnet_deploy.calibration.gate import Int8Config, evaluation_source, quantize_to_gate, require_labels
from resnet_deploy.calibration.readers import spool_calibration
from resnet_deploy.calibration.workspace import private_copy
from resnet_deploy.errors import UsageError
from resnet_deploy.export.artifact import check_outputs, parent_manifest, publish_onnx
from resnet_deploy.export.onnx import ExportResult
from resnet_deploy.manifest import package_versions
from resnet_deploy.publish import sha256_file
from resnet_deploy.reference import reference_or_parent

if TYPE_CHECKING:
    from resnet_deploy.data import DataSource
    from resnet_deploy.manifest import Manifest

VERSIONED = ("onnx", "onnxruntime-gpu", "onnxruntime", "nvidia-modelopt", "torch")
_QUANTIZER = {"tensorrt": "ModelOpt ONNX PTQ (TensorRT Q/DQ placement)", "cpu": "onnxruntime quantize_static (QDQ)"}


def _activations(config: Int8Config) -> str:
    if config.target != "cpu":
        return "int8 symmetric per tensor"
    from resnet_deploy.calibration.cpu import VARIANTS

    return f"{VARIANTS[config.cpu_variant].activations} asymmetric per tensor"


def _weights(config: Int8Config) -> str:
    if config.target != "cpu":
        return "int8 symmetric per output channel"
    from resnet_deploy.calibration.cpu import VARIANTS

    v = VARIANTS[config.cpu_variant]
    return (f"int8 symmetric per {'output channel' if v.per_channel else 'tensor'}"
            f"{', 7 bits (-64..64)' if v.reduce_range else ''}")


def int8_from_onnx(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], *, calib_source: DataSource,
                   config: Int8Config = Int8Config(), eval_source: DataSource | None = None, overwrite: bool = False,
                   debug: bool = False, log: Callable[[str], None] | None = None) -> ExportResult:
    """Quantize the FP32 ``onnx_path`` to INT8 at ``output`` (+ ``output.json``); publish only if the gate holds.

    ``calib_source``: the calibration samples (open with ``split="train"``, so digits calibrate on
    their train part). ``eval_source``: held-out labelled data for the gate (default: digits:eval
    for the demo weights). Raises GateError (nothing published) when the top-1 drop stays above
    ``config.gate`` even with the allowed layers kept in high precision.
    """
    import onnx

    t_start = time.perf_counter()
    output = check_outputs(output, overwrite=overwrite)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UsageError(f"{onnx_path}: no such ONNX file")
    config.validate()
    parent = parent_manifest(onnx_path)
    if parent.precision != "fp32":
        raise UsageError(f"{onnx_path}: is {parent.precision}; INT8 starts from the FP32 ONNX "
                         "(the quantizers refuse graphs that are already converted)")
    eval_source = evaluation_source(parent, eval_source, what="INT8")
    require_labels(eval_source, parent)
    parent_sha = sha256_file(onnx_path)
    reference, reference_label = reference_or_parent(parent, onnx_path)
    with reference, tempfile.TemporaryDirectory(prefix=".resnet-deploy-", dir=output.parent) as tmp:
        work = Path(tmp)
        cset = spool_calibration(calib_source, parent.preprocess, work)
        result = quantize_to_gate(private_copy(onnx_path, work), parent_sha, parent, cset, reference=reference,
                                  eval_source=eval_source, workdir=work, config=config, debug=debug, log=log)
        model = onnx.load(str(result.path))
        manifest = _manifest(parent, model, parent_sha=parent_sha, calibration=cset.summary(config.method),
                             reference=reference_label, result=result, config=config)
        final = publish_onnx(model, output, manifest)
    seconds = {**result.seconds, "total_s": time.perf_counter() - t_start}
    return ExportResult(output, final, seconds)


def _manifest(parent: Manifest, model, *, parent_sha: str, calibration: dict, reference: str, result,
              config: Int8Config) -> Manifest:
    source = {k: v for k, v in parent.source.items() if k in ("weights", "weights_sha256")}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    details = {
        "target": config.target,
        "quantizer": _QUANTIZER[config.target],
        "activations": _activations(config),
        "weights": _weights(config),
        "high_precision": config.high_precision,
        "opset": opset,
        "kept_high_precision": result.kept,
        "structure": result.structure,
        "gate": {"max_drop": config.gate.max_drop, "min_agreement": config.gate.min_agreement,
                 "max_rel_diff": config.gate.max_rel_diff},
        "attempts": [a.to_dict() for a in result.attempts],
    }
    if config.target == "cpu":
        from resnet_deploy.calibration.cpu import VARIANTS

        # What the gate assumed: the variant, the CPU families it is exact on, the host it held on.
        details["cpu"] = VARIANTS[config.cpu_variant].record()
    if result.sensitivity is not None:
        # The ranking the fallback used (most sensitive first), as far as it went and a little further.
        details["sensitivity"] = [s.to_dict() for s in result.sensitivity[:max(8, 2 * len(result.kept))]]
    return parent.derive(
        precision="int8",
        source={**source, "parent_sha256": parent_sha, "calibration": calibration},
        parity={"reference": reference, **result.parity.to_dict()},
        versions=package_versions(*VERSIONED),
        details=details,
        build=None,
    )
