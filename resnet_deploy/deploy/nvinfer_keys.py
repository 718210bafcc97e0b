"""The Gst-nvinfer ``[property]`` keys and the values nvinfer accepts, as data.

nvinfer reads its configuration with GLib's key-file parser and only *warns* about a key it does
not know ("Unknown or legacy key specified"), so a misspelt key silently falls back to its
default on the device. Every configuration this package writes is checked against this table
first (and a test checks the writers' output against it), so a typo fails here, not on a Jetson.

Source: NVIDIA's Gst-nvinfer configuration reference and the parser that implements it, read
for this table at DeepStream 9.1 (github.com/NVIDIA/DeepStream, commit 581889d,
``src/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.{h,cpp}``; enum values from
``includes/nvdsinfer_context.h`` and ``includes/nvbufsurftransform.h``). Ranges are those the
parser enforces (it rejects the value and fails to start); keys without a range accept any
value of their type. Only the ``[property]`` group is covered: the writers emit no other group.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_URL = "https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html"
SOURCE_CODE = ("https://github.com/NVIDIA/DeepStream/blob/581889d/src/gst-plugins/gst-nvinfer/"
               "gstnvinfer_property_parser.cpp")
NVDSINFER_MAX_BATCH_SIZE = 1024  # nvdsinfer_context.h
MAX_CHANNELS = 4  # nvdsinfer_context.h _MAX_CHANNELS: the most `offsets` entries


@dataclass(frozen=True)
class Key:
    kind: str  # int | bool | float | string | path | int-list | float-list | string-list
    choices: tuple[int, ...] | None = None  # the only accepted integers
    minimum: float | None = None
    length: tuple[int, int] | None = None  # (min, max) entries of a list
    meaning: str = ""


KEYS: dict[str, Key] = {
    # element
    "gie-unique-id": Key("int", minimum=1, meaning="unique id of this inference element"),
    "process-mode": Key("int", choices=(1, 2), meaning="1 primary (full frame), 2 secondary (objects)"),
    "interval": Key("int", minimum=0, meaning="batches skipped between inferences"),
    "labelfile-path": Key("path", meaning="labels: one line per output layer, labels separated by ';'"),
    "gpu-id": Key("int", minimum=0),
    "secondary-reinfer-interval": Key("int"),
    "output-tensor-meta": Key("bool"),
    "disable-output-host-copy": Key("bool"),
    "auto-inc-mem": Key("int"),
    "max-gpu-mem-per": Key("int"),
    "enable-dla": Key("bool"),
    "use-dla-core": Key("int"),
    "dump-input-tensor": Key("int"),
    "dump-output-tensor": Key("int"),
    "overwrite-input-tensor": Key("int"),
    "overwrite-output-tensor": Key("int"),
    "ip-tensor-file": Key("path"),
    "op-tensor-files": Key("string-list"),
    "raw-output-file-write": Key("bool"),
    # engine
    "batch-size": Key("int", minimum=1, meaning=f"max batch, 1..{NVDSINFER_MAX_BATCH_SIZE}"),
    "tensor-meta-pool-size": Key("int"),
    "network-mode": Key("int", choices=(0, 1, 2, 3), meaning="0 FP32, 1 INT8, 2 FP16, 3 best"),
    "model-engine-file": Key("path"),
    "int8-calib-file": Key("path"),
    "workspace-size": Key("int", meaning="MiB"),
    "output-blob-names": Key("string-list"),
    "is-classifier": Key("bool", meaning="legacy; network-type replaces it"),
    "network-type": Key("int", choices=(0, 1, 2, 3, 100),
                        meaning="0 detector, 1 classifier, 2 segmentation, 3 instance segmentation, 100 other"),
    "force-implicit-batch-dim": Key("bool"),
    "infer-dims": Key("int-list", length=(3, 3), meaning="c;h;w"),
    "output-io-formats": Key("string-list"),
    "layer-device-precision": Key("string-list"),
    "strongly-typed": Key("bool", meaning="build a strongly typed TensorRT network (precision from the ONNX)"),
    "dynamic-properties": Key("string"),
    "warmup-engine": Key("bool"),
    "stabilize-buffer-count": Key("int"),
    # preprocessing
    "model-color-format": Key("int", choices=(0, 1, 2), meaning="0 RGB, 1 BGR, 2 GRAY"),
    "net-scale-factor": Key("float", meaning="y = net-scale-factor * (x - offsets[c])"),
    "offsets": Key("float-list", length=(1, MAX_CHANNELS), meaning="per-channel mean on 0..255 pixels"),
    "mean-file": Key("path"),
    "maintain-aspect-ratio": Key("bool", meaning="scale keeping the aspect ratio, pad with black"),
    "symmetric-padding": Key("bool", meaning="with maintain-aspect-ratio: pad on both sides, not right/bottom"),
    "scaling-filter": Key("int", choices=(0, 1, 2, 3, 4, 5, 6),
                          meaning="0 nearest, 1 bilinear, 2-5 GPU cubic/super/Lanczos/ignored (VIC taps), "
                                  "6 default (GPU nearest)"),
    "scaling-compute-hw": Key("int", choices=(0, 1, 2), meaning="0 platform default, 1 GPU, 2 VIC (Jetson only)"),
    "network-input-order": Key("int", choices=(0, 1), meaning="0 NCHW, 1 NHWC"),
    "input-tensor-from-meta": Key("bool"),
    # custom implementations
    "custom-lib-path": Key("path"),
    "parse-bbox-func-name": Key("string"),
    "parse-bbox-instance-mask-func-name": Key("string"),
    "parse-segmentation-func-name": Key("string"),
    "engine-create-func-name": Key("string"),
    "parse-classifier-func-name": Key("string"),
    "custom-network-config": Key("string"),
    # model formats other than ONNX
    "model-file": Key("path"),
    "proto-file": Key("path"),
    "uff-file": Key("path"),
    "uff-input-order": Key("int", choices=(0, 1, 2)),
    "input-dims": Key("int-list", length=(4, 4)),
    "uff-input-dims": Key("int-list", length=(4, 4)),
    "uff-input-blob-name": Key("string"),
    "tlt-encoded-model": Key("path"),
    "tlt-model-key": Key("string"),
    "onnx-file": Key("path"),
    # detector, segmentation
    "num-detected-classes": Key("int", minimum=0),
    "enable-dbscan": Key("bool"),
    "cluster-mode": Key("int", choices=(0, 1, 2, 3, 4)),
    "crop-objects-to-roi-boundary": Key("bool"),
    "segmentation-threshold": Key("float", minimum=0),
    "segmentation-output-order": Key("int", choices=(0, 1)),
    "output-instance-mask": Key("bool"),
    "parse-func": Key("int"),
    # classifier
    "classifier-type": Key("string"),
    "classifier-threshold": Key("float", minimum=0, meaning="a class is reported when its output exceeds it"),
    "classifier-async-mode": Key("bool"),
    # secondary mode: which objects
    "input-object-min-width": Key("int", minimum=0),
    "input-object-min-height": Key("int", minimum=0),
    "input-object-max-width": Key("int", minimum=0),
    "input-object-max-height": Key("int", minimum=0),
    "operate-on-gie-id": Key("int"),
    "operate-on-class-ids": Key("int-list", length=(1, 1 << 16)),
    "filter-out-class-ids": Key("int-list", length=(1, 1 << 16)),
}

_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def parse_value(key: str, text: str) -> object:
    """``text`` as nvinfer reads ``key``'s type (GLib key-file syntax: lists are ';'-separated)."""
    spec = KEYS[key]
    text = text.strip()
    if spec.kind == "bool":
        if text.lower() not in _BOOLS:
            raise ValueError(f"{key}={text}: not a boolean (true, false, 1, 0)")
        return _BOOLS[text.lower()]
    if spec.kind == "int":
        return int(text)
    if spec.kind == "float":
        return float(text)
    if spec.kind in ("string", "path"):
        if not text:
            raise ValueError(f"{key}: empty value")
        return text
    items = [t.strip() for t in text.rstrip(";").split(";")]
    if spec.kind == "int-list":
        return [int(t) for t in items]
    if spec.kind == "float-list":
        return [float(t) for t in items]
    return items


def problems(properties: dict[str, str]) -> list[str]:
    """What nvinfer would ignore or reject in a ``[property]`` group; empty when all is accepted."""
    out = []
    for key, text in properties.items():
        spec = KEYS.get(key)
        if spec is None:
            out.append(f"{key}: not a Gst-nvinfer key (nvinfer would ignore it with a warning)")
            continue
        try:
            value = parse_value(key, text)
        except ValueError as exc:
            out.append(f"{key}={text}: not a valid {spec.kind} ({exc})")
            continue
        values = value if isinstance(value, list) else [value]
        if spec.length is not None and not spec.length[0] <= len(values) <= spec.length[1]:
            out.append(f"{key}={text}: {len(values)} entries, nvinfer takes {spec.length[0]}..{spec.length[1]}")
        if spec.choices is not None and any(v not in spec.choices for v in values):
            out.append(f"{key}={text}: nvinfer accepts only {', '.join(map(str, spec.choices))}")
        if spec.minimum is not None and any(v < spec.minimum for v in values):
            out.append(f"{key}={text}: below nvinfer's minimum {spec.minimum:g}")
        if key == "batch-size" and any(v > NVDSINFER_MAX_BATCH_SIZE for v in values):
            out.append(f"{key}={text}: above nvinfer's maximum {NVDSINFER_MAX_BATCH_SIZE}")
    return out
