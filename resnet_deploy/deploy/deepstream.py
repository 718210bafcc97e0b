"""DeepStream: nvinfer configurations that feed a gated ONNX what PyTorch saw, with the difference measured.

``deepstream_from_onnx`` writes one folder, published whole (nothing appears on failure):

* ``<stem>.deepstream.onnx`` (+ manifest): the exact-preprocessing variant
  (:mod:`resnet_deploy.deploy.nvinfer_graph`), gated against its parent: top-1 agreement 100% and
  logits within 1e-5 of the parent's largest logit on the evaluation data, the variant fed
  0..255 pixels, the parent the runtime's normalised tensor of the same crops;
* ``config_infer_primary_<name>.txt`` and ``config_infer_secondary_<name>.txt`` for it, and
  ``config_infer_primary_<name>_approx.txt`` for the unchanged artifact (copied beside it) with
  nvinfer's scalar scale: the usual configuration for a graph that cannot be changed;
* ``labels.txt`` in nvinfer's classifier format (one line per output layer, labels separated by
  ``;``) and a ``README.md`` with the commands and the measured fidelity table.

Every written key is checked against nvinfer's key table (:mod:`resnet_deploy.deploy.nvinfer_keys`)
and the fidelity is measured by emulating nvinfer's preprocessing from the written files
(:mod:`resnet_deploy.deploy.nvinfer_fidelity`). Nothing here runs DeepStream or TensorRT.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.deploy.gated import gated_manifest, recorded_parity
from resnet_deploy.deploy.nvinfer_keys import SOURCE_CODE, SOURCE_URL, problems
from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.manifest import InputSpec, Manifest, Preprocess, manifest_path
from resnet_deploy.parity import Gate, Parity, ParityAccumulator

#: the exact variant against its parent, on identically scaled input: the same computation
VARIANT_GATE = Gate(min_agreement=1.0, max_rel_diff=1e-5)
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
DEEPSTREAM_TARGET = "the DeepStream (nvinfer classifier) configuration"
# nvinfer builds a Q/DQ graph given network-mode=1 and no int8-calib-file in its FP16 mode and
# names the engine after the mode it built (nvdsinfer_model_builder.cpp: "INT8 calibration file
# not specified. Trying FP16 mode."; suggestedPathName = model + "_b" + batch + "_" + gpu + "_" + mode).
ENGINE_MODE = {"fp32": "fp32", "int8": "fp16", "fp16": "fp16"}
Log = Callable[[str], None]


@dataclass(frozen=True)
class DeepStreamOptions:
    batch_size: int = 1  # primary: frames per batch (usually the number of sources)
    secondary_batch_size: int = 16  # objects per batch, as NVIDIA's secondary classifier samples
    threshold: float = 0.5  # classifier-threshold on the softmax output
    gpu_id: int = 0
    photos: bool = True  # also measure on scikit-learn's sample photos (non-square, real)
    allow_ungated: bool = False


@dataclass
class DeepStreamResult:
    out_dir: Path
    name: str
    files: list[str]
    variant_gate: Parity
    fidelity: list[Any]  # FidelityRow
    geometry: dict[str, Any] = field(default_factory=dict)


def config_name(artifact: Path) -> str:
    """``resnet18.int8.onnx`` -> ``resnet18_int8``: the ``<name>`` in ``config_infer_primary_<name>.txt``."""
    return artifact.name.removesuffix(".onnx").replace(".", "_")


def engine_file(onnx_name: str, *, batch: int, gpu_id: int, precision: str) -> str:
    """The file nvinfer serialises the engine it builds from ``onnx_name`` to (beside it)."""
    return f"{onnx_name}_b{batch}_gpu{gpu_id}_{ENGINE_MODE[precision]}.engine"


def check_artifact(artifact: Path, manifest: Manifest) -> None:
    """What nvinfer's classifier path cannot take, refused before any work."""
    if artifact.suffix.lower() != ".onnx":
        raise UsageError(f"{artifact}: nvinfer builds its own engine from an ONNX model: pass the .onnx "
                         "this engine was built from")
    if manifest.input.dtype != "float32" or manifest.input.layout != "NCHW" or manifest.input.color != "RGB":
        raise UsageError(f"{artifact}: takes {manifest.input.dtype} {manifest.input.layout} {manifest.input.color}; "
                         "nvinfer hands TensorRT float32 planar RGB: export it with --input-format float")
    if manifest.precision == "int8" and manifest.details.get("target") == "cpu":
        raise UsageError(f"{artifact}: this INT8 graph is onnxruntime's CPU form (asymmetric uint8 activations), "
                         "which TensorRT does not take: quantize with --target tensorrt")
    if manifest.precision not in NETWORK_MODE:
        raise UsageError(f"{artifact}: precision {manifest.precision!r} has no nvinfer network-mode")


def deepstream_from_onnx(artifact: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, eval_source,
                         options: DeepStreamOptions = DeepStreamOptions(), overwrite: bool = False,
                         log: Log = lambda _msg: None) -> DeepStreamResult:
    """Write the DeepStream folder for ``artifact`` (see the module docstring); publish it only whole."""
    from resnet_deploy.export.artifact import load_checked
    from resnet_deploy.publish import atomic_folder, check_folder_destination

    artifact = Path(artifact)
    manifest = gated_manifest(artifact, allow_ungated=options.allow_ungated, target=DEEPSTREAM_TARGET)
    check_artifact(artifact, manifest)
    _check_options(options, manifest)
    check_folder_destination(out_dir, overwrite=overwrite)
    load_checked(artifact)  # an ONNX whose external data stays in its folder
    name = config_name(artifact)
    eval_source.for_model(manifest)
    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        result = _write(artifact, manifest, name, staging, eval_source, options, log)
    result.out_dir = Path(out_dir)
    return result


def _check_options(options: DeepStreamOptions, manifest: Manifest) -> None:
    top = min(manifest.batch.max, 1024)
    for what, batch in (("--batch-size", options.batch_size), ("--secondary-batch-size", options.secondary_batch_size)):
        if not manifest.batch.min <= batch <= top:
            raise UsageError(f"{what} {batch}: the model takes batches {manifest.batch.min}..{manifest.batch.max} "
                             f"(nvinfer at most 1024)")
    if not 0 <= options.threshold < 1:
        raise UsageError(f"--threshold {options.threshold}: a probability in 0..1")
    if options.gpu_id < 0:
        raise UsageError(f"--gpu-id {options.gpu_id}: must be 0 or more")


def _write(artifact: Path, manifest: Manifest, name: str, staging: Path, eval_source, options: DeepStreamOptions,
           log: Log) -> DeepStreamResult:
    import onnx

    from resnet_deploy.deploy import nvinfer_fidelity as fid
    from resnet_deploy.deploy.nvinfer_graph import PROBS, exact_variant, with_logits
    from resnet_deploy.export.artifact import publish_onnx, save_onnx
    from resnet_deploy.reference import reference_or_parent
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    pp = manifest.preprocess
    variant_name = artifact.name.removesuffix(".onnx") + ".deepstream.onnx"
    parent = onnx.load(str(artifact))
    variant = exact_variant(parent, pp)
    logits_name = parent.graph.output[0].name
    shutil.copyfile(artifact, staging / artifact.name)  # the unchanged artifact, for the approximate config
    shutil.copyfile(manifest_path(artifact), manifest_path(staging / artifact.name))
    checker = staging / ".check-logits.onnx"  # the variant with the parent's logits exposed: measured, not shipped
    save_onnx(with_logits(variant, logits_name), checker)

    log(f"gating {variant_name} against {artifact.name} on {eval_source.description}")
    with OnnxRuntimeSession(artifact, provider="cpu") as parent_sess, \
            OnnxRuntimeSession(checker, provider="cpu") as exact:
        gate = _variant_parity(parent_sess, exact, eval_source, pp)
        gate.check(VARIANT_GATE, what=f"the exact-preprocessing variant of {artifact.name}")

        labels = manifest.labels or [str(i) for i in range(manifest.num_classes)]
        (staging / "labels.txt").write_text(label_file(labels), encoding="utf-8")
        configs = _configs(artifact, manifest, name, variant_name, logits_name, PROBS, options)

        log("measuring nvinfer's preprocessing against the manifest's on real images")
        reference, ref_label = reference_or_parent(manifest, artifact)
        sets = [fid.FrameSet(eval_source.description, eval_source.frames(), reference, pp)]
        if options.photos:
            description, photos = fid.sample_photos()
            sets.append(fid.FrameSet(description, ((p, -1) for p in photos), reference, pp))
        geometry = _choose_geometry(configs, sets, exact, staging)
        header = [f"written by resnet-export deepstream from {artifact.name} ({manifest.arch}, {manifest.precision})",
                  "checked against nvinfer's documented keys; not run on DeepStream (see README.md)"]
        for filename, props in configs.items():
            write_config(staging / filename, props, header=header)
        rows = []
        with OnnxRuntimeSession(staging / artifact.name, provider="cpu") as approx:
            for fs in sets:
                rows.append(fid.measure(fs, exact, staging / f"config_infer_primary_{name}.txt",
                                        normalisation="exact (in-graph mean/std)"))
                rows.append(fid.measure(fs, approx, staging / f"config_infer_primary_{name}_approx.txt",
                                        normalisation="approximate (scalar scale)"))
        checker.unlink()

    deepstream = {
        "configs": sorted(configs), "labels": "labels.txt", "parent": artifact.name, "reference": ref_label,
        "in_graph_normalisation": {"mean": list(pp.mean), "std": list(pp.std), "input_range": "0..255"},
        "geometry": geometry, "fidelity": [r.to_dict() for r in rows],
        "variant_gate": {"vs": artifact.name, **gate.to_dict()},
        "keys_checked_against": SOURCE_URL, "emulation": "nvinfer preprocessing emulated in numpy; "
                                                           "not run on DeepStream",
    }
    variant_manifest = manifest.derive(
        input=InputSpec(name="input", dtype="float32", layout="NCHW", shape=manifest.input.shape, color="RGB"),
        # x / 255 - 0, over 1/255: the runtime's normalisation becomes the identity on 0..255 pixels
        preprocess=Preprocess(resize=pp.resize, crop=pp.crop, interpolation=pp.interpolation, mean=(0.0, 0.0, 0.0),
                              std=(1 / 255, 1 / 255, 1 / 255)),
        output={"name": PROBS, "softmax": True, "logits": logits_name},
        source={**manifest.source, "parent_sha256": manifest.source.get("sha256")},
        parity=recorded_parity(manifest),
        details={**manifest.details, "deepstream": deepstream},
    )
    publish_onnx(variant, staging / variant_name, variant_manifest, overwrite=False)
    result = DeepStreamResult(out_dir=staging, name=name, files=[], variant_gate=gate, fidelity=rows,
                              geometry=geometry)
    (staging / "README.md").write_text(readme(artifact, manifest, result, configs, variant_name,
                                                       reference=ref_label), encoding="utf-8")
    result.files = sorted(p.name for p in staging.iterdir())
    return result


def _variant_parity(parent_sess, exact, source, pp: Preprocess) -> Parity:
    """Parent on the runtime's normalised crops vs the variant on the same crops as 0..255 floats."""
    from resnet_deploy.data import normalize

    acc = ParityAccumulator(source.description)
    for batch in source.batches(pp, batch_size=16):
        if batch.images is None:
            raise UsageError(f"{source.description}: holds normalised tensors; DeepStream's fidelity needs images")
        pixels = np.ascontiguousarray(batch.images.astype(np.float32).transpose(0, 3, 1, 2))
        acc.update(parent_sess.run(normalize(batch.images, pp)), exact.run(pixels), batch.labels)
    if acc.n == 0:
        raise DeployError(f"{source.description}: no decodable samples to gate the variant on")
    return acc.result()


def _choose_geometry(configs: dict[str, dict[str, str]], sets, exact, staging: Path) -> dict[str, Any]:
    """maintain-aspect-ratio: the scaling that agrees with PyTorch on more images (ties: stretch).

    torchvision crops the centre of a uniformly scaled image; nvinfer never crops, it either
    stretches the whole frame or fits it with black bars. Which is closer depends on the model
    and the frames, so it is measured on the evaluation data and the photos, exact normalisation.
    """
    from resnet_deploy.deploy import nvinfer_fidelity as fid

    probe = staging / ".geometry-probe.txt"
    scores = {}
    primary = next(k for k in configs if k.startswith("config_infer_primary_") and not k.endswith("_approx.txt"))
    for label, keys in (("stretch", {"maintain-aspect-ratio": "0"}),
                        ("pad", {"maintain-aspect-ratio": "1", "symmetric-padding": "1"})):
        write_config(probe, {**configs[primary], **keys})
        rows = [fid.measure(fs, exact, probe, normalisation="exact") for fs in sets]
        scores[label] = {"agreement": [r.parity.top1_agreement for r in rows],
                         "agree_count": sum(round(r.parity.top1_agreement * r.parity.count) for r in rows)}
    probe.unlink()
    chosen = "pad" if scores["pad"]["agree_count"] > scores["stretch"]["agree_count"] else "stretch"
    for props in configs.values():
        props["maintain-aspect-ratio"] = "1" if chosen == "pad" else "0"
        if chosen == "pad":
            props["symmetric-padding"] = "1"
    return {"chosen": chosen, "measured": scores, "data": [fs.description for fs in sets]}


def label_file(labels: list[str]) -> str:
    """nvinfer's classifier labels: one line per output layer, its labels separated by ';'."""
    clean = [str(lab).replace(";", ",").replace("\n", " ").strip() or str(i) for i, lab in enumerate(labels)]
    return ";".join(clean) + "\n"


def _configs(artifact: Path, manifest: Manifest, name: str, variant_name: str, logits: str, probs: str,
             options: DeepStreamOptions) -> dict[str, dict[str, str]]:
    """The three configurations, as ordered key -> value text (geometry keys filled in later)."""
    precision = manifest.precision
    size = manifest.preprocess.crop

    def common(onnx_file: str, batch: int, output: str) -> dict[str, str]:
        props = {
            "gpu-id": str(options.gpu_id),
            "onnx-file": onnx_file,
            "model-engine-file": engine_file(onnx_file, batch=batch, gpu_id=options.gpu_id, precision=precision),
            "labelfile-path": "labels.txt",
            "batch-size": str(batch),
            "network-mode": str(NETWORK_MODE[precision]),
            "network-type": "1",
            "infer-dims": f"3;{size};{size}",
            "network-input-order": "0",
            "model-color-format": "0",
            "maintain-aspect-ratio": "0",
            "scaling-filter": "1",
            "scaling-compute-hw": "1",
            "output-blob-names": output,
            "classifier-threshold": f"{options.threshold:g}",
        }
        if precision != "fp32":
            props["strongly-typed"] = "1"
        return props

    mean, std = np.asarray(manifest.preprocess.mean), np.asarray(manifest.preprocess.std)
    exact = {"net-scale-factor": "1", "offsets": "0;0;0"}
    approx = {"net-scale-factor": f"{1.0 / (255.0 * float(std.mean())):.10g}",
              "offsets": ";".join(f"{255.0 * m:.6g}" for m in mean)}
    primary = {"gie-unique-id": "1", "process-mode": "1"}
    secondary = {"gie-unique-id": "2", "process-mode": "2", "operate-on-gie-id": "1", "operate-on-class-ids": "0"}
    return {
        f"config_infer_primary_{name}.txt": {**primary, **common(variant_name, options.batch_size, probs), **exact},
        f"config_infer_secondary_{name}.txt": {**secondary, **common(variant_name, options.secondary_batch_size,
                                                                     probs), **exact},
        f"config_infer_primary_{name}_approx.txt": {**primary, **common(artifact.name, options.batch_size, logits),
                                                    **approx},
    }


COMMENTS = {
    "net-scale-factor": "y = net-scale-factor * (x - offsets[c]) on 0..255 pixels",
    "model-engine-file": "the name nvinfer gives the engine it builds, so it is built once, not at every start",
    "maintain-aspect-ratio": "measured closest to the manifest's resize + center crop (README.md)",
    "scaling-filter": "1 bilinear: the manifest's interpolation (the default, 6, is nearest on the GPU)",
    "scaling-compute-hw": "1 GPU: the same scaler on Jetson and dGPU (0 would use the VIC on Jetson)",
    "operate-on-gie-id": "placeholder: the gie-unique-id of the detector whose objects this classifies",
    "operate-on-class-ids": "placeholder: the detector's class ids to classify, ';'-separated",
    "strongly-typed": "TensorRT keeps the graph's own FP16/INT8 precision (Cast, Q/DQ nodes)",
    "classifier-threshold": "compared with each class's output; a class is reported above it",
}


def write_config(path: Path, props: dict[str, str], *, header: list[str] | None = None) -> None:
    """An nvinfer configuration file; refused if any key or value is not one nvinfer accepts."""
    if found := problems(props):
        raise DeployError(f"{path.name}: would write an invalid nvinfer configuration: {found[0]}")
    lines = [f"# {h}" for h in header or []] + ["[property]"]
    for key, value in props.items():
        if key in COMMENTS:
            lines.append(f"# {COMMENTS[key]}")
        lines.append(f"{key}={value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def readme(artifact: Path, manifest: Manifest, result: DeepStreamResult, configs: dict, variant_name: str, *,
           reference: str) -> str:
    """The output folder's README: what is there, how to run it, the measured fidelity."""
    from resnet_deploy.deploy.nvinfer_fidelity import FidelityRow

    name = result.name
    g = result.variant_gate
    rows: list[FidelityRow] = result.fidelity
    table = ["| data | normalisation | nvinfer geometry | top-1 agreement with PyTorch | top-1 drop (points) | "
             "max abs logit diff | min cosine |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        p = r.parity
        drop = "-" if p.top1_drop is None else f"{p.top1_drop:.2f}"
        table.append(f"| {r.data} | {r.normalisation} | {r.geometry} | {p.top1_agreement:.2%} | {drop} | "
                     f"{p.max_abs_diff:.3g} | {p.cosine_min:.4f} |")
    geo = result.geometry
    measured = "; ".join(f"{k}: {v['agree_count']} agreeing images" for k, v in geo["measured"].items())
    primary, secondary = f"config_infer_primary_{name}.txt", f"config_infer_secondary_{name}.txt"
    return f"""# DeepStream (nvinfer) files for {artifact.name}

Written by `resnet-export deepstream` from `{artifact.name}` ({manifest.arch}, {manifest.precision},
{manifest.num_classes} classes, input {manifest.preprocess.crop}x{manifest.preprocess.crop}).
**Nothing here was run on DeepStream or TensorRT**: the configurations were checked against
nvinfer's documented keys and value ranges, and nvinfer's preprocessing was emulated in numpy
to measure the figures below with onnxruntime.

| file | what |
|---|---|
| `{variant_name}` | the model nvinfer should load: takes float RGB NCHW 0..255 (what nvinfer hands TensorRT with `net-scale-factor=1`, `offsets=0;0;0`), applies mean {list(manifest.preprocess.mean)} / std {list(manifest.preprocess.std)} in the graph, outputs softmax probabilities `probs` |
| `{primary}` | primary classifier (whole frames, `process-mode=1`) |
| `{secondary}` | secondary classifier on a detector's objects (`process-mode=2`); edit the placeholders `operate-on-gie-id` (your detector's `gie-unique-id`) and `operate-on-class-ids` (the classes to classify) |
| `config_infer_primary_{name}_approx.txt` | the unchanged `{artifact.name}` with nvinfer's scalar scale (`net-scale-factor` from the mean std, `offsets` = 255 x mean); its output is logits, so `classifier-threshold` compares logits |
| `labels.txt` | nvinfer's classifier labels: one line per output layer, labels separated by `;` |

nvinfer builds the TensorRT engine on the first start and writes it beside the ONNX under the
name `model-engine-file` gives (`{configs[primary]['model-engine-file']}`), so later starts load
it; the folder must be writable. An engine is specific to the GPU, TensorRT version, batch size
and precision.

## Try it

```bash
# a primary classifier on a video file (fakesink: prints nothing, measures nothing; add nvdsosd to see labels)
gst-launch-1.0 filesrc location=/opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.h264 ! \\
  h264parse ! nvv4l2decoder ! m.sink_0 nvstreammux name=m batch-size=1 width=1280 height=720 ! \\
  nvinfer config-file-path={primary} ! fakesink
# in deepstream-app: [primary-gie] or [secondary-gie0] with config-file={secondary}
deepstream-app -c your_deepstream_app_config.txt
```

## Fidelity (measured here, emulated nvinfer preprocessing, onnxruntime CPU)

Reference: {reference} on the manifest's preprocessing (resize the short side to
{manifest.preprocess.resize}, center crop {manifest.preprocess.crop}, mean/std). Candidate: the
emitted model on the tensor nvinfer would compute from the same frames, reading the configuration
file named in the row.

{chr(10).join(table)}

The exact variant itself is the runtime's model: on the manifest's crops fed as 0..255 pixels it
matches `{artifact.name}` fed the runtime's normalised tensor on {g.data}: top-1 agreement
{g.top1_agreement:.2%}, max abs logit difference {g.max_abs_diff:.3g} ({g.max_rel_diff:.1e} of the
largest logit; gate 1e-5). What remains in the table is geometry (nvinfer scales the whole frame
or object, torchvision crops its centre) and, for the approximate rows, the scalar scale.

`maintain-aspect-ratio={configs[primary]['maintain-aspect-ratio']}` was chosen by measurement
({measured}; ties keep the stretch).

## What TensorRT sees

`{variant_name}` is `{artifact.name}` unchanged behind three FP32 pointwise nodes (Div 255, Sub
mean, Div std) and followed by an FP32 Softmax. An FP16 or INT8 parent keeps its precision: its
Cast or QuantizeLinear nodes now read the in-graph normalised tensor. For FP16/INT8 graphs the
configuration sets `strongly-typed=1`, so TensorRT takes precision from the graph as this
project's own engine builder does; there is no `int8-calib-file`, as the Q/DQ nodes carry the
scales. DeepStream 9.1's builder, given `network-mode=1` without a calibration file, builds in
its FP16 mode and names the engine `_fp16`; the configuration's `model-engine-file` follows that.

Keys checked against: {SOURCE_URL} ({SOURCE_CODE}).
"""
