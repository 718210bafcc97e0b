"""The exact-preprocessing graph: a gated ONNX that takes what nvinfer hands it.

nvinfer can only compute ``y = net-scale-factor * (x - offsets[c])`` with one scalar scale, so a
torchvision model's per-channel std cannot be expressed in its configuration. This variant moves
the whole normalisation into the graph: its input is float32 RGB NCHW in 0..255 (nvinfer with
``net-scale-factor=1`` and ``offsets=0;0;0``), three nodes compute ``(x / 255 - mean) / std`` in
the runtime's own order of operations (``resnet_deploy.data.normalize``), and a Softmax turns the
logits into the probabilities ``classifier-threshold`` is compared with.

The parent's nodes are not touched: the new nodes run in FP32 in front of whatever the parent
starts with (FP32 Conv, the FP16 graph's Cast, the INT8 graph's QuantizeLinear), and the Softmax
takes the parent's FP32 logits. So an FP16 or INT8 parent keeps exactly its precision: TensorRT
sees three FP32 pointwise layers before the parent's first layer (it fuses them into one kernel)
and an FP32 softmax after its last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.errors import UsageError

if TYPE_CHECKING:
    import onnx

    from resnet_deploy.manifest import Preprocess

INPUT = "input"
PROBS = "probs"
_PREFIX = "nvinfer_"  # names of everything this module adds


def exact_variant(parent: onnx.ModelProto, pp: Preprocess) -> onnx.ModelProto:
    """A copy of ``parent`` taking 0..255 float RGB NCHW, normalising in-graph, with a ``probs`` output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = parent.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise UsageError(f"the model has {len(graph.input)} inputs and {len(graph.output)} outputs; "
                         "nvinfer's classifier path needs one image input and one logits output")
    inp, out = graph.input[0], graph.output[0]
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise UsageError("the model's input is not float32 (nvinfer hands TensorRT float32 planar data); "
                         "export it with --input-format float")
    model = onnx.ModelProto()
    model.CopyFrom(parent)
    g = model.graph
    parent_input = _PREFIX + "normalised"
    for node in g.node:  # the parent now reads the normalised tensor
        node.input[:] = [parent_input if name == inp.name else name for name in node.input]
    shape = (1, 3, 1, 1)
    consts = {
        _PREFIX + "255": np.full((), 255.0, dtype=np.float32),
        _PREFIX + "mean": np.asarray(pp.mean, dtype=np.float32).reshape(shape),
        _PREFIX + "std": np.asarray(pp.std, dtype=np.float32).reshape(shape),
    }
    g.initializer.extend(numpy_helper.from_array(v, name=k) for k, v in consts.items())
    front = [
        helper.make_node("Div", [INPUT, _PREFIX + "255"], [_PREFIX + "unit"], name=_PREFIX + "div255"),
        helper.make_node("Sub", [_PREFIX + "unit", _PREFIX + "mean"], [_PREFIX + "centred"], name=_PREFIX + "sub_mean"),
        helper.make_node("Div", [_PREFIX + "centred", _PREFIX + "std"], [parent_input], name=_PREFIX + "div_std"),
    ]
    nodes = front + list(g.node) + [helper.make_node("Softmax", [out.name], [PROBS], axis=1, name=_PREFIX + "softmax")]
    del g.node[:]
    g.node.extend(nodes)
    new_input = onnx.ValueInfoProto()
    new_input.CopyFrom(inp)
    new_input.name = INPUT
    del g.input[:]
    g.input.append(new_input)
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(out)
    probs.name = PROBS
    del g.output[:]
    g.output.append(probs)
    onnx.checker.check_model(model, full_check=True)
    return model


def with_logits(variant: onnx.ModelProto, logits: str) -> onnx.ModelProto:
    """``variant`` with the parent's logits as its first output (``probs`` second): for checking it."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(variant)
    elem = model.graph.output[0].type.tensor_type.elem_type
    probs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(logits, elem, None))
    model.graph.output.extend(probs)
    return model
