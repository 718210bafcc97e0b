"""Per-layer sensitivity to INT8: how far the model's outputs move when only that layer is quantized.

For each layer the quantizer quantized (a node fed by DequantizeLinear), the FP32 parent gets
just that layer's Q/DQ pairs, with the scales and zero points the quantizer calibrated, and
runs on calibration samples next to the plain parent. The score is the relative squared error
of each graph output, sum (q - f)^2 / sum f^2, summed over the outputs: a classifier's logits,
a segmentation model's per-pixel scores, each stage output of a backbone (each relative to its
own power, so a stage with large activations does not drown the others, as the gate's
per-output cosine does not). Calibration samples, not the evaluation set: choosing layers
on the data the gate is measured on would tune the gate to itself.

Q/DQ is inserted on the parent's own tensors, so it does not matter that a quantizer dropped a
Relu into its Q range (onnxruntime does) or stored weights as int8: the parent still has them
in FP32. Int32 bias quantization is left out (its error is orders of magnitude below the rest).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy.errors import require

if TYPE_CHECKING:
    import onnx

    from resnet_deploy.calibration.readers import CalibrationSet
    from resnet_deploy.manifest import Manifest

_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op_type: str
    error: float  # relative squared output error vs FP32 with only this layer quantized (summed over outputs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _InputQuant:
    index: int  # which input of the node
    scale: np.ndarray  # float32
    zero_point: np.ndarray
    axis: int | None


def quantized_layers(quantized: onnx.ModelProto, parent_names: set[str]) -> dict[str, tuple[str, list[_InputQuant]]]:
    """Nodes of ``quantized`` (by name, also present in the parent) fed through DequantizeLinear, with their Q params."""
    from onnx import numpy_helper

    graph = quantized.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    layers: dict[str, tuple[str, list[_InputQuant]]] = {}
    for node in graph.node:
        if node.op_type in _QDQ or node.name not in parent_names:
            continue
        quants = []
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
                continue
            if dq.input[1] not in inits or dq.input[2] not in inits:
                continue
            zp = numpy_helper.to_array(inits[dq.input[2]])
            if zp.dtype == np.int32:  # bias
                continue
            axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
            scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
            quants.append(_InputQuant(i, scale, zp, axis if scale.ndim else None))
        if quants:
            layers[node.name] = (node.op_type, quants)
    return layers


def layer_sensitivity(parent: Path, quantized: Path, cset: CalibrationSet, manifest: Manifest, *,
                      samples: int = 64, batch_size: int = 16) -> list[LayerSensitivity]:
    """Score every quantized layer of ``quantized`` on the first ``samples`` calibration samples; most sensitive first."""
    import onnx

    ort = require("onnxruntime", install="pip install onnxruntime-gpu")
    model = onnx.load(str(parent))
    layers = quantized_layers(onnx.load(str(quantized)), {n.name for n in model.graph.node})
    batches = list(cset.inputs(manifest.input.dtype, manifest.preprocess, batch_size=batch_size, limit=samples))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3

    def outputs(proto_bytes: bytes) -> list[list[np.ndarray]]:
        """Every graph output (float32, as the graph computes them) of each calibration batch."""
        sess = ort.InferenceSession(proto_bytes, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return [sess.run(None, {name: x}) for x in batches]

    def squared(batches_outs: list[list[np.ndarray]], minus: list[list[np.ndarray]] | None = None) -> np.ndarray:
        """Per output, the sum over batches of the squares (of the difference from ``minus``), in float64."""
        total = np.zeros(len(batches_outs[0]))
        for b, outs in enumerate(batches_outs):
            for i, o in enumerate(outs):
                d = o.astype(np.float64) - (0.0 if minus is None else minus[b][i])
                total[i] += float(np.square(d).sum())
        return total

    reference = outputs(model.SerializeToString())
    power = squared(reference)
    results = []
    for name, (op_type, quants) in layers.items():
        with _only_layer_quantized(model, name, quants):
            err = squared(outputs(model.SerializeToString()), reference)
        results.append(LayerSensitivity(name, op_type, float(np.where(power > 0, err / np.maximum(power, 1e-300), err).sum())))
    order = {name: i for i, name in enumerate(layers)}
    return sorted(results, key=lambda s: (-s.error, order[s.node]))


class _only_layer_quantized:
    """Temporarily give node ``name`` of ``model`` Q/DQ pairs on the inputs in ``quants``; undone on exit."""

    def __init__(self, model: onnx.ModelProto, name: str, quants: list[_InputQuant]) -> None:
        self.model, self.name, self.quants = model, name, quants

    def __enter__(self) -> None:
        from onnx import helper, numpy_helper

        graph = self.model.graph
        self.index = next(i for i, n in enumerate(graph.node) if n.name == self.name)
        node = graph.node[self.index]
        self.saved_inputs = list(node.input)
        self.n_inits = len(graph.initializer)
        new_nodes = []
        for k, q in enumerate(self.quants):
            prefix = f"_sensitivity_{k}"
            graph.initializer.append(numpy_helper.from_array(q.scale, f"{prefix}_scale"))
            graph.initializer.append(numpy_helper.from_array(q.zero_point, f"{prefix}_zp"))
            axis = {} if q.axis is None else {"axis": q.axis}
            args = [f"{prefix}_scale", f"{prefix}_zp"]
            new_nodes.append(helper.make_node("QuantizeLinear", [node.input[q.index], *args], [f"{prefix}_q"], **axis))
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{prefix}_q", *args], [f"{prefix}_dq"], **axis))
            node.input[q.index] = f"{prefix}_dq"
        for offset, new in enumerate(new_nodes):  # right before the node: the graph stays topologically sorted
            graph.node.insert(self.index + offset, new)
        self.n_new = len(new_nodes)

    def __exit__(self, *exc: object) -> None:
        graph = self.model.graph
        for _ in range(self.n_new):
            del graph.node[self.index]
        node = graph.node[self.index]
        del node.input[:]
        node.input.extend(self.saved_inputs)
        del graph.initializer[self.n_inits:]
