"""INT8 Q/DQ placed for TensorRT: ModelOpt's ONNX post-training quantization, then a check of what it wrote.

TensorRT fuses Q/DQ into its INT8 kernels when they sit where it expects them: symmetric int8
(zero points 0), per-channel weight scales, Q/DQ on Conv inputs and on the identity input of
each residual Add (so Conv+Add fuse), none on the graph outputs. ModelOpt places them that way;
``check_tensorrt_qdq`` proves it on every graph it produced, and refuses the graph otherwise.

ModelOpt 0.47 monkeypatches onnxruntime.quantization's calibrator classes in place and never
undoes it; afterwards a plain ``quantize_static`` in the same process fails ("Quantization
parameters are not specified"). ``_ort_quantization_restored`` snapshots and restores them, so
the CPU target keeps working after a TensorRT-target run (a pipeline does both).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.calibration.targets import TARGETS
from resnet_deploy.calibration.workspace import tool_scope
from resnet_deploy.errors import DeployError, require

if TYPE_CHECKING:
    import onnx

    from resnet_deploy.calibration.readers import SetReader

_INSTALL = "pip install 'nvidia-modelopt[onnx]'"


def quantize_tensorrt(parent: Path, reader: SetReader, output: Path, *, method: str,
                      exclude: Sequence[str] = (), high_precision: str = "fp32", debug: bool = False) -> None:
    """Write ``parent`` with TensorRT-placed INT8 Q/DQ to ``output``, calibrated on ``reader``.

    ``exclude``: node names kept in ``high_precision`` (exact names, not patterns). ``parent`` and
    ``output`` must sit in a private work folder: ModelOpt writes intermediate files beside them.
    """
    TARGETS["tensorrt"].check_options(method=method, high_precision=high_precision)
    require("modelopt.onnx.quantization", install=_INSTALL)
    from modelopt.onnx.quantization import quantize

    reader.rewind()
    with _ort_quantization_restored(), tool_scope(output.parent, debug=debug) as log:
        try:
            quantize(
                onnx_path=str(parent), quantize_mode="int8", calibration_data_reader=reader,
                calibration_method=method, calibration_eps=["cpu"],
                # ModelOpt matches these with re.match: anchor them so "conv_1" does not also take "conv_12".
                nodes_to_exclude=[f"{re.escape(name)}$" for name in exclude] or None,
                high_precision_dtype=high_precision, output_path=str(output),
                log_level="DEBUG" if debug else "ERROR", simplify=False,
            )
        except Exception as exc:  # ModelOpt raises AssertionError/ValueError/RuntimeError/ORT errors
            raise DeployError(f"ModelOpt INT8 quantization failed: {_first_line(exc)}"
                              + (f" (its last output: {log.tail()})" if log.tail() else "")) from exc
    if not output.is_file():
        raise DeployError(f"ModelOpt INT8 quantization wrote no model (its last output: {log.tail()})")
    if reader.batches_read < len(reader):
        # Never random scales: every calibration batch must have gone through the calibrator.
        raise DeployError(f"ModelOpt read {reader.batches_read} of {len(reader)} calibration batches")
    keep_interface(parent, output)


def keep_interface(parent: Path, quantized: Path) -> None:
    """Give ``quantized`` the graph inputs' and outputs' declared types and shapes of ``parent``.

    Quantizing changes no interface, but ModelOpt's shape inference can rewrite a declaration: a
    segmenter's upsampled scores (N, C, H, W) came out declared with rank 12 (ModelOpt 0.47 on an
    FCN-ResNet18 with dynamic height and width), which a consumer of the declared shape (TensorRT,
    Triton) would take at its word.
    """
    import onnx

    want = onnx.load(str(parent), load_external_data=False).graph
    model = onnx.load(str(quantized))
    changed = False
    for declared, right in ((model.graph.input, want.input), (model.graph.output, want.output)):
        types = {v.name: v.type for v in right}
        for v in declared:
            if v.name in types and v.type != types[v.name]:
                v.type.CopyFrom(types[v.name])
                changed = True
    if changed:
        onnx.save(model, str(quantized))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


@contextlib.contextmanager
def _ort_quantization_restored() -> Iterator[None]:
    """Snapshot onnxruntime.quantization's module globals, class attributes and registries; restore them after."""
    # ModelOpt's patch targets are all imported by its quantization package; import them first so
    # the snapshot covers every module it can touch.
    import modelopt.onnx.quantization  # noqa: F401
    import onnxruntime.quantization  # noqa: F401

    modules = [m for name, m in list(sys.modules.items())
               if m is not None and (name == "onnxruntime.quantization" or name.startswith("onnxruntime.quantization."))]
    globals_saved = [(m, dict(vars(m))) for m in modules]
    classes_saved = []
    dicts_saved = []
    for m in modules:
        for name, value in vars(m).items():
            if isinstance(value, type) and value.__module__ == m.__name__:
                classes_saved.append((value, dict(vars(value))))
            elif isinstance(value, dict) and not name.startswith("__"):  # QDQRegistry, QLinearOpsRegistry
                dicts_saved.append((value, dict(value)))
    try:
        yield
    finally:
        for m, saved in globals_saved:
            for key, value in saved.items():
                if vars(m).get(key, saved) is not value:
                    setattr(m, key, value)
        for cls, saved in classes_saved:
            for key in [k for k in vars(cls) if k not in saved]:
                delattr(cls, key)
            for key, value in saved.items():
                if key not in ("__dict__", "__weakref__") and vars(cls).get(key, None) is not value:
                    setattr(cls, key, value)
        for d, saved in dicts_saved:
            if d != saved:
                d.clear()
                d.update(saved)


# ----------------------------------------------------------------------------- checking the result


def check_tensorrt_qdq(model: onnx.ModelProto, *, excluded: Sequence[str] = (), float_outputs: bool = True) -> dict[str, int]:
    """Raise DeployError unless ``model`` has TensorRT's Q/DQ placement; return counts for the manifest.

    Checks: at least one Q/DQ pair; every zero point 0 and int8; every Conv/Gemm weight quantized
    per output channel; the identity input of every residual Add next to a quantized Conv through a
    DequantizeLinear (unless a layer kept in high precision reads that tensor too); no Q/DQ
    producing a graph output (unless not ``float_outputs``: a backbone's, ``Int8Target.check``).
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    problems: list[str] = []
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        raise DeployError("ModelOpt wrote a graph without Q/DQ nodes (nothing was quantized)")
    for node in qdq:
        if len(node.input) < 3 or node.input[2] not in inits:
            problems.append(f"{node.name} has no constant zero point")
            continue
        zp = numpy_helper.to_array(inits[node.input[2]])
        if zp.dtype != np.int8 or np.any(zp != 0):
            problems.append(f"{node.name} zero point is {zp.dtype} {np.unique(zp)[:3].tolist()}, not int8 0")
    weights = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.name in excluded or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # an unquantized layer (ModelOpt leaves e.g. the classifier Gemm in high precision)
        weights += 1
        scale = inits.get(dq.input[1])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
        channels = _weight_channels(node, dq, inits, producer)
        if scale is None or axis is None or numpy_helper.to_array(scale).size != channels:
            problems.append(f"{node.name} weight is not quantized per output channel")
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    adds = unfused = 0
    for node in graph.node:
        if node.op_type != "Add" or node.name in excluded or len(node.input) != 2:
            continue
        sources = [producer.get(name) for name in node.input]
        if any(src is None for src in sources):  # a bias or constant input: not a residual Add
            continue
        # The identity input's Q/DQ exists so TensorRT can fuse the Add into the quantized Conv on the
        # other input; with that Conv kept in high precision there is nothing to fuse, and none is placed.
        if not any(_quantized_conv(src, producer) for src in sources):
            continue
        adds += 1
        if any(src.op_type == "DequantizeLinear" for src in sources):
            continue
        # ModelOpt quantizes a tensor for all its consumers or none: when a layer reading the identity
        # tensor is kept in high precision, that tensor stays FP32 and this Add runs unfused (a speed
        # cost of the accuracy fallback, reported in the manifest, not a misplacement).
        identity = [name for name, src in zip(node.input, sources) if not _quantized_conv(src, producer)]
        if any(c in excluded for name in identity for c in consumers.get(name, [])):
            unfused += 1
        else:
            problems.append(f"residual {node.name} has no Q/DQ on its identity input")
    for out in graph.output if float_outputs else ():
        src = producer.get(out.name)
        if src is not None and src.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems.append(f"graph output {out.name} comes from {src.op_type}")
    if problems:
        raise DeployError("the INT8 graph is not placed for TensorRT: " + "; ".join(problems[:5])
                          + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    return {"qdq_nodes": len(qdq), "quantized_weights": weights, "residual_adds": adds,
            "residual_adds_unfused": unfused}


def _quantized_conv(node, producer) -> bool:
    """``node`` is a Conv whose data input comes through DequantizeLinear."""
    src = producer.get(node.input[0]) if node.op_type == "Conv" else None
    return src is not None and src.op_type == "DequantizeLinear"


def _weight_channels(node, dq, inits, producer) -> int:
    """Output channels of a Conv/Gemm weight behind ``dq`` (Q from a float initializer, or an int8 initializer)."""
    src = dq.input[0]
    if src not in inits and src in producer and producer[src].op_type == "QuantizeLinear":
        src = producer[src].input[0]
    if src not in inits:
        return -1
    shape = inits[src].dims
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    if node.op_type == "Gemm" and not trans_b:
        return int(shape[1])
    return int(shape[0]) if shape else -1

