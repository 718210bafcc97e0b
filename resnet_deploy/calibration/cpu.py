"""INT8 for CPUs: onnxruntime ``quantize_static``, QDQ format, U8S8 (uint8 activations, int8 per-channel weights).

Why not the TensorRT graph on CPUs: onnxruntime's fast int8 kernels (QLinearConv) want
asymmetric uint8 activations; symmetric int8 activations run slower than FP32 there and
ModelOpt's graph slower still (docs/measurements.md, the CPU table). On this layout ORT fuses every Conv, Add
and the classifier into QLinearConv/QLinearAdd/QGemm.

Weights are quantized to 7 bits (``reduce_range``: int8 values in -64..64; activations keep all
8 bits). The artifact is gated on the machine that builds it and then runs on others, and
onnxruntime's U8S8 kernels do not compute the same thing everywhere: on x86 CPUs with AVX2 or
AVX-512 but no VNNI, ``vpmaddubsw`` sums pairs of u8 x s8 products in saturating 16-bit
integers, which 8-bit weights overflow (255 x 127 x 2 > 32,767) and 7-bit weights cannot
(255 x 64 x 2 = 32,640). With 7-bit weights every kernel family (``resnet_deploy.cpuinfo``)
computes the same integers, so the gate holds wherever the artifact runs.
``docs/cpu-int8.md`` has the measurements, and why no faster VNNI-only variant is offered.

``quant_pre_process`` is not run: the parent is already onnxsim-simplified with BatchNorm
folded, and on ResNet-50 it changed no node (measured: the same 53 Conv, 49 Relu, 16 Add
before and after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy.calibration.targets import TARGETS
from resnet_deploy.calibration.workspace import tool_scope
from resnet_deploy.errors import DeployError, require

if TYPE_CHECKING:
    import onnx

    from resnet_deploy.calibration.readers import SetReader

@dataclass(frozen=True)
class CpuVariant:
    """One way to quantize for onnxruntime's CPU kernels, and the kernel families that compute it exactly."""

    name: str
    activations: str  # "uint8" | "int8"
    per_channel: bool
    reduce_range: bool  # weights in -64..64 (7 bits) instead of -127..127

    @property
    def valid_for(self) -> list[str]:
        """The ``cpuinfo.FAMILIES`` whose kernels compute this graph as the build host did."""
        from resnet_deploy.cpuinfo import FAMILIES, SATURATING_U8S8

        # x86 runs int8 activations through the same U8S8 kernels (onnxruntime converts S8 QDQ to U8).
        return [f for f in FAMILIES if self.reduce_range or f not in SATURATING_U8S8]

    def record(self) -> dict[str, Any]:
        """The manifest's ``details["cpu"]``: the variant, where it is valid, and the host its gate held on."""
        from resnet_deploy.cpuinfo import host_cpu
        from resnet_deploy.manifest import package_versions

        versions = package_versions("onnxruntime", "onnxruntime-gpu")
        ort = versions.get("onnxruntime") or versions.get("onnxruntime-gpu")
        return {"variant": self.name, "weights_bits": 7 if self.reduce_range else 8, "valid_for": self.valid_for,
                "build_host": {**host_cpu().to_dict(), "onnxruntime": ort}}

    def precisions(self) -> dict[str, str]:
        """The manifest's ``activations`` and ``weights`` descriptions."""
        return {"activations": f"{self.activations} asymmetric per tensor",
                "weights": f"int8 symmetric per {'output channel' if self.per_channel else 'tensor'}"
                           f"{', 7 bits (-64..64)' if self.reduce_range else ''}"}


#: The default: exact on every CPU family. The others exist for ``benchmarks/cpu_int8_portability.py``,
#: which measures them (none is faster on VNNI: docs/cpu-int8.md).
PORTABLE = CpuVariant("u8s8-w7", activations="uint8", per_channel=True, reduce_range=True)
VARIANTS = {v.name: v for v in (
    PORTABLE,
    CpuVariant("u8s8", activations="uint8", per_channel=True, reduce_range=False),
    CpuVariant("s8s8", activations="int8", per_channel=True, reduce_range=False),
    CpuVariant("u8s8-w7-per-tensor", activations="uint8", per_channel=False, reduce_range=True),
    CpuVariant("u8s8-per-tensor", activations="uint8", per_channel=False, reduce_range=False),
)}
_INSTALL = "pip install onnxruntime-gpu (it also runs on CPUs), or onnxruntime on a CPU-only host"


def quantize_cpu(parent: Path, reader: SetReader, output: Path, *, method: str, exclude: Sequence[str] = (),
                 high_precision: str = "fp32", variant: str = PORTABLE.name, debug: bool = False) -> None:
    """Write ``parent`` with ``variant``'s QDQ (a ``VARIANTS`` name) to ``output``, calibrated on ``reader``;
    ``exclude`` stays FP32.

    ``parent`` must sit in a private work folder (the quantizer writes ``<name>-inferred.onnx`` beside it).
    """
    TARGETS["cpu"].check_options(method=method, high_precision=high_precision)
    spec = VARIANTS[variant]
    require("onnxruntime.quantization", install=_INSTALL)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate = {"entropy": CalibrationMethod.Entropy, "max": CalibrationMethod.MinMax,
                 "percentile": CalibrationMethod.Percentile}[method]
    reader.rewind()
    with tool_scope(output.parent, debug=debug) as log:
        try:
            quantize_static(
                str(parent), str(output), reader, quant_format=QuantFormat.QDQ, per_channel=spec.per_channel,
                reduce_range=spec.reduce_range, weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8 if spec.activations == "uint8" else QuantType.QInt8,
                nodes_to_exclude=list(exclude), calibrate_method=calibrate,
                # One batch per collect call: the calibrator's memory stays one batch of activations
                # (without it MinMax keeps every batch's tensors until the end).
                extra_options={"CalibStridedMinMax": 1,
                               # Logits stay float: a quantized classifier output clips large logits to the
                               # calibrated range (entropy clips hardest), which only costs accuracy. So do
                               # a segmentation head's scores, upsampled by the graph's last node, a Resize.
                               "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul", "Resize"]},
            )
        except Exception as exc:  # onnxruntime raises ValueError/RuntimeError/its own types
            text = str(exc).strip()
            raise DeployError(f"onnxruntime INT8 quantization failed: {(text.splitlines() or [type(exc).__name__])[0][:300]}"
                              + (f" (its last output: {log.tail()})" if log.tail() else "")) from exc
    if reader.batches_read < len(reader):
        raise DeployError(f"onnxruntime read {reader.batches_read} of {len(reader)} calibration batches")
    if exclude:
        import onnx

        model = onnx.load(str(output))
        feed_float_inputs(model, onnx.load(str(parent)), set(exclude))
        onnx.save_model(model, str(output))


def feed_float_inputs(model: onnx.ModelProto, parent: onnx.ModelProto, names: set[str]) -> None:
    """Give each node in ``names`` the FP32 tensors its parent node read, and drop Q/DQ nobody reads.

    ``nodes_to_exclude`` alone does not keep a layer's inputs in FP32: onnxruntime quantizes a
    tensor for its producer and hands every consumer the DequantizeLinear output, excluded ones
    included. Where it folded a Relu/Clip into the Q range (renaming the Conv's output to the
    activation's), the activation is put back for the excluded node, which must see it applied.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    parent_nodes = {node.name: node for node in parent.graph.node}
    parent_producer = {out: node for node in parent.graph.node for out in node.output}
    inits = {i.name for i in graph.initializer}
    restored: dict[str, str] = {}  # parent tensor -> its restored activation's output (one copy for every reader)
    for node in list(graph.node):
        if node.name not in names or node.name not in parent_nodes:
            continue
        for i, name in enumerate(node.input):
            src = producer.get(name)
            if src is None or src.op_type != "DequantizeLinear":
                continue
            want = parent_nodes[node.name].input[i]
            was, now = parent_producer.get(want), producer.get(want)
            if was is None or (now is not None and now.name == was.name):
                node.input[i] = want  # a graph input, or the same tensor from the same node
                continue
            if want in restored:
                node.input[i] = restored[want]
                continue
            act_input = parent_producer.get(was.input[0]) if was.input else None
            if was.op_type not in ("Relu", "Clip") or now is None or act_input is None or now.name != act_input.name \
                    or any(extra and extra not in inits for extra in was.input[1:]):
                raise DeployError(f"cannot keep {node.name} in FP32: onnxruntime rewrote its input {want}")
            copy = _activation_copy(was, inputs=[want, *was.input[1:]], output=f"{want}_fp32")
            graph.node.insert(list(graph.node).index(node), copy)
            producer[copy.output[0]] = copy
            restored[want] = copy.output[0]
            node.input[i] = copy.output[0]
    _drop_unread_qdq(graph)


def _activation_copy(node, *, inputs: list[str], output: str):
    from onnx import helper

    return helper.make_node(node.op_type, inputs, [output], name=f"{node.name}_fp32",
                            **{a.name: helper.get_attribute_value(a) for a in node.attribute})


def _drop_unread_qdq(graph) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads (after rewiring), and their scales and zero points."""
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(out in read for out in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def check_cpu_qdq(model: onnx.ModelProto, *, excluded: Sequence[str] = (),  # noqa: ARG001
                  variant: str = PORTABLE.name, float_outputs: bool = True) -> dict[str, int]:
    """Raise DeployError unless ``model`` is ``variant``'s QDQ: its activation type, int8 weights with zero point 0
    (per channel where the variant says), within 7 bits where it reduces the range, float graph outputs
    (unless not ``float_outputs``: ``Int8Target.check``).
    (``excluded``: the target table's common signature; every check here holds whichever layers were left in FP32.)"""
    spec = VARIANTS[variant]
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    act_dtype = np.dtype(spec.activations)
    problems: list[str] = []
    activations = weights = largest = 0
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            activations += 1
            zp = inits.get(node.input[2]) if len(node.input) > 2 else None
            if zp is None or numpy_helper.to_array(zp).dtype != act_dtype:
                problems.append(f"{node.name} does not quantize to {spec.activations}")
        elif node.op_type in ("Conv", "Gemm") and len(node.input) > 1:
            dq = producer.get(node.input[1])
            if dq is None or dq.op_type != "DequantizeLinear":
                continue  # kept in FP32
            weights += 1
            zp = inits.get(dq.input[2]) if len(dq.input) > 2 else None
            zp = None if zp is None else numpy_helper.to_array(zp)
            per_channel = any(a.name == "axis" for a in dq.attribute)
            if zp is None or zp.dtype != np.int8 or np.any(zp != 0) or per_channel != spec.per_channel:
                problems.append(f"{node.name} weight is not int8 symmetric per {'channel' if spec.per_channel else 'tensor'}")
            if dq.input[0] in inits:
                peak = int(np.abs(numpy_helper.to_array(inits[dq.input[0]]).astype(np.int16)).max(initial=0))
                largest = max(largest, peak)
                if spec.reduce_range and peak > 64:
                    problems.append(f"{node.name} weight reaches {peak}, beyond 7 bits (64)")
    for out in graph.output if float_outputs else ():
        src = producer.get(out.name)
        if src is not None and src.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems.append(f"graph output {out.name} comes from {src.op_type}")
    if activations == 0:
        raise DeployError("onnxruntime wrote a graph without QuantizeLinear nodes (nothing was quantized)")
    if problems:
        raise DeployError(f"the INT8 graph is not {spec.name} QDQ: " + "; ".join(problems[:5]))
    return {"quantized_activations": activations, "quantized_weights": weights, "weight_max_abs": largest}
