"""``resnet-export``: onnx, fp16, int8, trt, pipeline and deepstream."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from resnet_deploy.archs import ARCH_NAMES, MODEL_NAMES, STAGES, TASKS
from resnet_deploy.calibration.targets import METHODS, TARGET_NAMES
from resnet_deploy.cli.common import (
    CONTEXT_SETTINGS,
    WEIGHTS,
    Group,
    batch_list,
    debug_option,
    group_setup,
    overwrite_option,
    thread_count,
)
from resnet_deploy.cli.serve import pipeline_triton_check, pipeline_triton_option, pipeline_triton_write, triton_export_cmd
from resnet_deploy.pipeline import PIPELINE_TASKS


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@debug_option
def cli(debug: bool) -> None:
    """Export a trained ResNet to ONNX, FP16, INT8 and TensorRT, each proven against PyTorch.

    \b
    Example:
      resnet-export onnx --arch resnet50 --weights model.pth -o resnet50.onnx
    """
    group_setup(debug)
    if not {"-h", "--help"} & set(sys.argv[1:]):  # help needs no toolchain
        from resnet_deploy.extras import check_export_toolchain

        check_export_toolchain(needed_by="resnet-export")


def stage_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """Parse "c3,c4,c5" into ("c3", "c4", "c5")."""
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names or any(n not in STAGES for n in names):
        raise click.BadParameter(f"{value!r}: comma-separated names from {','.join(STAGES)}")
    return names


@cli.command("onnx")
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="Classifier head size (default: the checkpoint's, else 1000; segmentation: else 21).")
@click.option("--weights", type=WEIGHTS, default=None, metavar="PATH|torchvision|demo",
              help="A .pth/.safetensors state_dict, torchvision's weights, or the built-in demo "
                   "(trained on digits). Default: untrained (random, seed 0).")
@click.option("--arch", type=click.Choice(MODEL_NAMES), default="resnet50", show_default=True,
              help="ResNet variant, or a segmentation model (fcn_*, deeplabv3_*).")
@click.option("--task", type=click.Choice(TASKS), default=None,
              help="classify, segment (a ResNet's FCN head) or backbone (its stage outputs) "
                   "[default: what the arch says; a ResNet classifies].")
@click.option("--outputs", callback=stage_list, default=None, metavar="c2,c3,c4,c5",
              help="Backbone: the stage outputs to export [default: all four].")
@click.option("--image-size", type=click.IntRange(min=32), default=None,
              help="Classifier input (crop) size in pixels [default: the weights' preset, else 224].")
@click.option("--resize", type=click.IntRange(min=32), default=None,
              help="Short side before the center crop [default: the preset, else size*256/224]; "
                   "segment/backbone: the short side of the whole image [default: 520].")
@click.option("--min-size", type=click.IntRange(min=32), default=None,
              help="Segment/backbone: smallest input height or width the graph takes [default: 32; demo: 32].")
@click.option("--max-size", type=click.IntRange(min=32), default=None,
              help="Segment/backbone: largest input height or width the graph takes [default: 1024; demo: 192].")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Largest batch the graph declares (the batch is dynamic from 1).")
@click.option("--opset", type=click.IntRange(17, 20), default=18, show_default=True,
              help="ONNX opset (18 parses on TensorRT 10.0+ / JetPack 6).")
@click.option("--input-format", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="float: normalised NCHW; uint8: raw NHWC RGB, normalised inside the graph.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--eval-data", default=None, metavar="SRC",
              help="Image folder, .npy/.npz, 'digits' or 'digits-seg' (segmentation: a VOC folder too): gate the "
                   "export vs PyTorch on it [default: the demo weights' own held-out data].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .onnx (its manifest goes to OUTPUT.json).")
@overwrite_option
@debug_option
def onnx_cmd(arch, weights, num_classes, task, outputs, image_size, resize, min_size, max_size, max_batch, opset,
             input_format, no_simplify, eval_data, output, overwrite, debug):
    """Export ARCH to ONNX, verified against PyTorch in onnxruntime.

    \b
    Example:
      resnet-export onnx --arch resnet18 --weights demo --eval-data digits -o demo18.onnx
    """
    import time

    from resnet_deploy.data import open_source
    from resnet_deploy.export.artifact import check_outputs
    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
    from resnet_deploy.weights import load_model

    t0 = time.perf_counter()
    check_outputs(output, overwrite=overwrite)
    source = open_source(eval_data, split="eval") if eval_data else None
    loaded = load_model(arch, weights, num_classes=num_classes, task=task, outputs=outputs)
    for note in loaded.notes:
        click.echo(f"note: {note}")
    if source is None and (own := loaded.weights.data_for(loaded.task)) is not None:
        source = open_source(own, split="eval")  # the demo's own held-out data
    config = OnnxConfig(image_size=image_size, resize=resize, max_batch=max_batch, opset=opset,
                        input_format=input_format, simplify=not no_simplify, min_size=min_size, max_size=max_size)
    result = onnx_from_torch(loaded, output, config=config, eval_source=source, overwrite=overwrite)
    report_artifact(result.path, result.manifest)
    steps = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in result.seconds.items())
    click.echo(f"time: {time.perf_counter() - t0:.1f} s in all ({steps})")


def height_width(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """Callback of ``--opt-size``: ``HxW`` (trtexec's shape spelling, ``520x693``) or one number for a square."""
    if value is None:
        return None
    parts = value.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise click.BadParameter(f"{value!r} is not HEIGHTxWIDTH (e.g. 520x693) or one size", ctx, param)
    h, w = (int(p) for p in parts * (3 - len(parts)))
    return h, w


@cli.command("trt")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output engine .plan (its manifest goes to OUTPUT.json).")
@click.option("--min-batch", type=int, default=None, help="Profile minimum batch [default: the ONNX manifest's].")
@click.option("--opt-batch", type=int, default=None, help="Batch TensorRT tunes for [default: the manifest's].")
@click.option("--max-batch", type=int, default=None, help="Profile maximum batch [default: the manifest's].")
@click.option("--min-size", type=int, default=None,
              help="Segment/backbone: profile's smallest height and width [default: the manifest's].")
@click.option("--opt-size", callback=height_width, default=None, metavar="HxW",
              help="Segment/backbone: height x width TensorRT tunes for [default: the manifest's].")
@click.option("--max-size", type=int, default=None,
              help="Segment/backbone: profile's largest height and width [default: the manifest's].")
@click.option("--workspace", "workspace_mib", type=int, default=None, metavar="MiB",
              help="Workspace memory limit in MiB (keep small on Jetson: memory is shared).")
@click.option("--opt-level", "optimization_level", type=int, default=3, show_default=True, help="Builder optimization level 0..5.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache file: read if present, written back after the build.")
@click.option("--hardware-compat", "hardware_compatibility", is_flag=True, help="Build for any Ampere+ discrete GPU (slower engines).")
@click.option("--version-compat", is_flag=True, help="Loadable by later TensorRT of the same major version.")
@click.option("--inspect", is_flag=True, help="Print the engine inspector's layers and precisions as JSON.")
@overwrite_option
@debug_option
def trt_cmd(model, output, min_batch, opt_batch, max_batch, min_size, opt_size, max_size, workspace_mib,
            optimization_level, timing_cache, hardware_compatibility, version_compat, inspect, overwrite, debug):
    """Build a strongly typed TensorRT engine from MODEL (.onnx): precision comes from the ONNX itself.

    \b
    Example:
      resnet-export trt resnet50.int8.onnx -o resnet50.int8.plan --max-batch 32 --timing-cache trt.cache
      resnet-export trt deeplab.onnx -o deeplab.plan --max-batch 4 --min-size 256 --opt-size 520x693 --max-size 768
    """
    import json

    from resnet_deploy.export.tensorrt import EngineConfig, engine_from_onnx, inspect_engine

    config = EngineConfig(min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, min_size=min_size,
                          opt_size=opt_size, max_size=max_size, workspace_mib=workspace_mib,
                          optimization_level=optimization_level, timing_cache=timing_cache,
                          hardware_compatibility=hardware_compatibility, version_compatible=version_compat,
                          overwrite=overwrite)
    result = engine_from_onnx(model, output, config=config)
    report_artifact(result.path, result.manifest)
    build = result.manifest.build or {}
    click.echo(f"built with TensorRT {build.get('tensorrt')} on {build.get('gpu')} "
               f"(sm_{str(build.get('compute_capability', '')).replace('.', '')}) in {result.build_time_s:.1f} s")
    if inspect:
        click.echo(json.dumps(inspect_engine(result.path), indent=2))


def report_artifact(path: Path, manifest) -> None:
    """Two lines: what was written, and its parity against PyTorch."""
    size_mb = path.stat().st_size / 1e6
    inp = manifest.input
    task = "" if manifest.task == "classify" else f" {manifest.task}"
    sizes = "" if manifest.size is None else f", height/width {manifest.size.min}..{manifest.size.max}"
    click.echo(f"wrote {path} ({size_mb:.1f} MB, {manifest.arch}{task}, {manifest.precision}, "
               f"input {inp.dtype} {inp.layout} {list(inp.shape)}, batch {manifest.batch.min}..{manifest.batch.max}{sizes})")
    p = manifest.parity or {}
    if p and "outputs" in p:  # segmentation, backbone
        agreement = "" if p.get("pixel_agreement") is None else f"pixel agreement {p['pixel_agreement']:.4%}, "
        if p.get("miou") is not None:
            agreement = f"mIoU {p['miou']:.2%} (PyTorch {p['miou_ref']:.2%}), " + agreement
        worst = max(p["outputs"].values(), key=lambda o: o["max_rel_diff"])
        click.echo(f"parity vs PyTorch on {p['data']}: {agreement}max |diff| {worst['max_abs_diff']:.3g} "
                   f"({worst['max_rel_diff']:.1e} of max), cosine >= {min(o['cosine_min'] for o in p['outputs'].values()):.6f}")
    elif p:
        acc = "" if p.get("top1") is None else f"top-1 {p['top1']:.2%} (PyTorch {p['top1_ref']:.2%}), "
        click.echo(f"parity vs PyTorch on {p['data']}: {acc}agreement {p['top1_agreement']:.2%}, "
                   f"max |diff| {p['max_abs_diff']:.3g} ({p['max_rel_diff']:.1e} of max logit)")


def _data_option(name: str, help_text: str):
    return click.option(name, default=None, metavar="SRC", help=help_text)


def _default_demo_data(model: Path, given: str | None) -> str | None:
    """``given``, else the data ``model``'s weights come with for its task (the demo's digits or digits-seg), else None."""
    if given is not None:
        return given
    from resnet_deploy.export.artifact import parent_manifest
    from resnet_deploy.weights import Weights

    manifest = parent_manifest(model)
    weights = Weights.of(manifest)
    return None if weights is None else weights.data_for(manifest.task)


def _report_child(result, *, t0: float) -> None:
    import time

    m = result.manifest
    report_artifact(result.path, m)
    reference = (m.parity or {}).get("reference", "pytorch")
    if reference != "pytorch":
        click.echo(f"reference: {reference}")
    cal = m.source.get("calibration")
    if cal:
        click.echo(f"calibration: {cal['source']}, {cal['count']} used, {cal['skipped']} skipped, "
                   f"{cal['method']}, sha256 {cal['sha256'][:16]}")
    steps = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in result.seconds.items() if k != "total_s")
    click.echo(f"time: {time.perf_counter() - t0:.1f} s in all ({steps})")


@cli.command("fp16")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_data_option("--calib-data", "Samples AutoCast measures activation ranges on (digits: their train part) "
                              "[default: digits for the demo weights, else random inputs].")
@click.option("--calib-count", type=click.IntRange(min=1), default=32, show_default=True,
              help="Calibration samples (AutoCast keeps every activation of each in memory: keep it small).")
@_data_option("--eval-data", "Held-out data for the FP16 gate vs PyTorch (digits: their eval part), labelled for "
                             "a classifier [default: the demo weights' own].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .onnx (its manifest goes to OUTPUT.json).")
@overwrite_option
@debug_option
def fp16_cmd(model, calib_data, calib_count, eval_data, output, overwrite, debug):
    """Convert the FP32 MODEL to FP16 with ModelOpt AutoCast (FP32 inputs and outputs kept).

    Published only if the task's gate against PyTorch holds: for a classifier top-1 agreement
    >= 99.5% and a top-1 drop <= 0.2 points; for segmentation pixel agreement >= 99.5%; for a
    backbone each output's cosine >= 0.999 (docs/tasks.md).

    \b
    Example:
      resnet-export fp16 demo18.onnx -o demo18.fp16.onnx
    """
    import time

    from resnet_deploy.data import open_source
    from resnet_deploy.export.artifact import check_outputs
    from resnet_deploy.export.fp16 import fp16_from_onnx

    t0 = time.perf_counter()
    check_outputs(output, overwrite=overwrite)
    calib_data = _default_demo_data(model, calib_data)
    calib = open_source(calib_data, split="train", count=calib_count) if calib_data else None
    source = open_source(eval_data, split="eval") if eval_data else None
    if calib is None:
        click.echo("Note: no --calib-data: AutoCast measures activation ranges on random inputs", err=True)
    result = fp16_from_onnx(model, output, calib_source=calib, eval_source=source, overwrite=overwrite, debug=debug)
    _report_child(result, t0=t0)
    details = result.manifest.details
    click.echo(f"fp16: {details['fp16_initializers']} weights in FP16, {len(details['fp32_nodes'])} nodes kept in FP32")


@cli.command("int8")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_data_option("--calib-data", "Calibration samples: image folder, .npy/.npz or 'digits' (their train part).")
@click.option("--calib-count", type=click.IntRange(min=1), default=512, show_default=True,
              help="Samples drawn from --calib-data (seeded, sorted: the same set every run).")
@click.option("--method", type=click.Choice(METHODS), default="entropy", show_default=True,
              help="Activation range calibration (percentile: --target cpu only).")
@click.option("--target", type=click.Choice(TARGET_NAMES), default="tensorrt", show_default=True,
              help="tensorrt: ModelOpt's symmetric Q/DQ placed for TensorRT; cpu: onnxruntime U8S8 QDQ "
                   "with 7-bit weights (the same answers on every CPU, with or without VNNI).")
@click.option("--high-precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Type of what stays unquantized (tensorrt target; fp16 engines fail to build on Orin with "
                   "TensorRT 10.16, NVIDIA/TensorRT#4832).")
@_data_option("--eval-data", "Held-out data for the accuracy gate (digits: their eval part), labelled for a "
                             "classifier [default: the demo weights' own].")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Largest drop vs PyTorch, in points, that may be published: top-1 for a classifier, mIoU for "
                   "segmentation (on data with masks) [default: 1.0]. A backbone is gated by cosine instead.")
@click.option("--max-kept", type=click.IntRange(min=0), default=None,
              help="Most layers the fallback may keep in high precision to meet --max-drop "
                   "(0: no fallback) [default: half of the quantized layers].")
@click.option("--no-cache", is_flag=True, help="Calibrate again even when model, data and method match a cached run.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .onnx (its manifest goes to OUTPUT.json).")
@overwrite_option
@debug_option
def int8_cmd(model, calib_data, calib_count, method, target, high_precision, eval_data, max_drop, max_kept, no_cache,
             output, overwrite, debug):
    """Quantize the FP32 MODEL to INT8 (explicit Q/DQ), calibrated on real data, gated against PyTorch.

    If the task's gate misses (classifiers: the top-1 drop exceeds --max-drop; segmentation: the
    mIoU drop does, or pixel agreement < 98% on data without masks; backbones: an output's cosine
    < 0.98), the most sensitive layers are kept in high precision until it holds; if it never
    does, nothing is published (exit 1).

    \b
    Example:
      resnet-export int8 demo18.onnx --calib-data digits --calib-count 256 -o demo18.int8.onnx
      resnet-export int8 resnet50.onnx --calib-data photos/ --target cpu -o resnet50.cpu.int8.onnx
    """
    import time

    from resnet_deploy.calibration.gate import Int8Config
    from resnet_deploy.data import open_source
    from resnet_deploy.export.artifact import check_outputs
    from resnet_deploy.export.int8 import int8_from_onnx

    t0 = time.perf_counter()
    if calib_data is None:
        raise click.UsageError("--calib-data is required: an image folder, .npy/.npz or 'digits' "
                               "(INT8 scales are never made up)")
    config = Int8Config(target=target, method=method, high_precision=high_precision, gate=_int8_gate(model, max_drop),
                        max_kept=max_kept, use_cache=not no_cache)
    config.validate()
    check_outputs(output, overwrite=overwrite)
    calib = open_source(calib_data, split="train", count=calib_count)
    source = open_source(eval_data, split="eval") if eval_data else None
    result = int8_from_onnx(model, output, calib_source=calib, config=config, eval_source=source,
                            overwrite=overwrite, debug=debug, log=lambda msg: click.echo(msg, err=True))
    _report_child(result, t0=t0)
    kept = result.manifest.details["kept_high_precision"]
    click.echo(f"int8 ({target}): kept in {high_precision}: {', '.join(kept) if kept else 'none'}")
    if (cpu := result.manifest.details.get("cpu")) is not None:
        from resnet_deploy.cpuinfo import families_text

        host = cpu["build_host"]
        click.echo(f"int8 (cpu): {cpu['variant']}, exact on {families_text(cpu['valid_for'])}; gated on "
                   f"{host.get('cpu') or '?'} ({host.get('family') or 'unknown'}), onnxruntime {host.get('onnxruntime')}")


def _int8_gate(model: Path, max_drop: float | None):
    """``--max-drop`` as the INT8 gate of MODEL's task (None: the task's default, ``parity.task_gate``)."""
    from resnet_deploy.export.artifact import parent_manifest
    from resnet_deploy.parity import int8_gate_with_drop

    return None if max_drop is None else int8_gate_with_drop(parent_manifest(model).task, max_drop)


@cli.command("pipeline")
@click.option("--arch", type=click.Choice(MODEL_NAMES),
              default="resnet18", show_default=True, help="ResNet variant, or a segmentation model.")
@click.option("--task", type=click.Choice(PIPELINE_TASKS), default=None,
              help="segment: the arch's FCN segmenter (resnet18 -> fcn_resnet18) [default: the arch's own task].")
@click.option("--weights", type=WEIGHTS, default="demo", show_default=True, metavar="PATH|torchvision|demo|random",
              help="Weights to deploy ('random': untrained, seed 0).")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Classifier head size.")
@click.option("--image-size", type=click.IntRange(min=32), default=None,
              help="Input (crop) size [default: the weights' preset, else 224].")
@click.option("--resize", type=click.IntRange(min=32), default=None,
              help="Short side before the crop (a segmenter: of the whole image).")
@click.option("--min-size", type=click.IntRange(min=32), default=None,
              help="Segmenter: smallest input height or width of every artifact [default: 32].")
@click.option("--max-size", type=click.IntRange(min=32), default=None,
              help="Segmenter: largest input height or width of every artifact (and its engines' profile) "
                   "[default: 1024; demo: 192].")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Largest batch of every artifact.")
@_data_option("--calib-data", "Calibration samples [default: the demo's data, its train part: digits, or "
                              "digits-seg for the demo segmenter].")
@click.option("--calib-count", type=click.IntRange(min=1), default=512, show_default=True,
              help="INT8 calibration samples (FP16 uses at most 32).")
@click.option("--method", type=click.Choice(METHODS), default="entropy", show_default=True,
              help="INT8 activation range calibration.")
@_data_option("--eval-data", "Held-out labelled data (a segmenter: with masks) for every gate and the report "
                             "[default: the demo's data, its eval part].")
@click.option("--max-drop", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="INT8 gate: largest drop vs PyTorch, in points (top-1; a segmenter: mIoU).")
@click.option("--batch", "batches", default="1,8", show_default=True, callback=batch_list, metavar="1,8",
              help="Batch sizes to benchmark.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=2.0, show_default=True, metavar="S",
              help="Timed seconds per model and batch size.")
@click.option("--threads", type=click.IntRange(min=1), callback=thread_count, default=None,
              help="CPU threads [default: the CPUs this process may use].")
@click.option("--no-tensorrt", is_flag=True, help="Skip the TensorRT engine stage even where TensorRT exists.")
@pipeline_triton_option
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (created; its parent must exist).")
@overwrite_option
@debug_option
def pipeline_cmd(arch, task, weights, num_classes, image_size, resize, min_size, max_size, max_batch, calib_data,
                 calib_count, method, eval_data, max_drop, batches, duration, threads, no_tensorrt, triton_repo, out_dir,
                 overwrite, debug):
    """Everything in one go: ONNX, FP16, INT8 (TensorRT and CPU targets), TensorRT engines where
    TensorRT and a GPU exist; each gated against PyTorch, all benchmarked side by side, and a report.

    \b
    Example (the built-in default: the demo ResNet-18 and the digits, no download):
      resnet-export pipeline -o out
      resnet-export pipeline --arch resnet50 --weights r50.pth --calib-data calib/ --eval-data val/ -o out50
      resnet-export pipeline --task segment -o out-seg     # the demo FCN-ResNet18 on digits-seg
    """
    import time

    from resnet_deploy.cli.common import table
    from resnet_deploy.pipeline import (SUMMARY_HEADERS, PipelineConfig, report_files, resolve_config, run_pipeline,
                                        summary_rows)

    t0 = time.perf_counter()
    config = resolve_config(PipelineConfig(  # resolved here too: --triton is checked against the resolved task
        arch=arch, task=task, weights=weights, num_classes=num_classes, image_size=image_size,
        resize=resize, min_size=min_size, max_size=max_size, max_batch=max_batch, calib_data=calib_data,
        eval_data=eval_data, calib_count=calib_count, method=method, max_drop=max_drop, tensorrt=not no_tensorrt,
        batches=tuple(batches), duration_s=duration, threads=threads,
    ))
    if triton_repo:
        pipeline_triton_check(out_dir, overwrite=overwrite, task=config.task or "classify")
    result = run_pipeline(out_dir, config=config, overwrite=overwrite, debug=debug,
                          log=lambda msg: click.echo(msg, err=True))
    click.echo(table(SUMMARY_HEADERS[result.task], summary_rows(result.summary, result.task)))
    for stage in result.stages:
        if stage.status != "ok":
            click.echo(f"{stage.name}: {stage.status} ({stage.note})")
    files = ", ".join(str(result.out_dir / name) for name in report_files(result.task))
    click.echo(f"report: {files} ({time.perf_counter() - t0:.0f} s in all)")
    if triton_repo:
        pipeline_triton_write(result, overwrite=overwrite)


cli.add_command(triton_export_cmd)


# --- deepstream (issue 15) -------------------------------------------------------------------
@cli.command("deepstream")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (published whole; its parent must exist).")
@_data_option("--eval-data", "Labelled real images the variant is gated and the fidelity measured on "
                             "[default: digits for the demo weights].")
@click.option("--eval-count", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Most --eval-data images used (seeded subset; the fidelity check holds them in memory).")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Primary configuration's batch-size (frames per batch: usually the number of sources).")
@click.option("--secondary-batch-size", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Secondary configuration's batch-size (objects per batch).")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="classifier-threshold on the softmax probabilities.")
@click.option("--gpu-id", type=click.IntRange(min=0), default=0, show_default=True,
              help="gpu-id (and the engine name).")
@click.option("--no-photos", is_flag=True,
              help="Measure fidelity on --eval-data only, not on scikit-learn's sample photos.")
@click.option("--allow-ungated", is_flag=True, help="Deploy an artifact whose gate was not measured on real data.")
@overwrite_option
@debug_option
def deepstream_cmd(artifact, out_dir, eval_data, eval_count, batch_size, secondary_batch_size, threshold, gpu_id,
                   no_photos, allow_ungated, overwrite, debug):
    """Write nvinfer configurations (primary, secondary, approximate) and an exact-preprocessing
    model for the gated ARTIFACT (.onnx), with nvinfer's fidelity to PyTorch measured on real images.

    \b
    Example:
      resnet-export deepstream demo18.onnx -o ds18
    """
    import time

    from resnet_deploy.data import open_source
    from resnet_deploy.deploy.deepstream import DEEPSTREAM_TARGET, DeepStreamOptions, deepstream_from_onnx
    from resnet_deploy.deploy.gated import gated_manifest
    from resnet_deploy.publish import check_folder_destination

    t0 = time.perf_counter()
    options = DeepStreamOptions(batch_size=batch_size, secondary_batch_size=secondary_batch_size, threshold=threshold,
                                gpu_id=gpu_id, photos=not no_photos, allow_ungated=allow_ungated)
    gated_manifest(artifact, allow_ungated=allow_ungated, target=DEEPSTREAM_TARGET)  # refuse before opening any data
    check_folder_destination(out_dir, overwrite=overwrite)
    eval_data = _default_demo_data(artifact, eval_data)
    if eval_data is None:
        raise click.UsageError("--eval-data is required: labelled real images (the demo's digits are built in)")
    result = deepstream_from_onnx(artifact, out_dir, eval_source=open_source(eval_data, split="eval", count=eval_count),
                                  options=options, overwrite=overwrite, log=lambda msg: click.echo(msg, err=True))
    g = result.variant_gate
    click.echo(f"wrote {out_dir}/: {', '.join(result.files)}")
    click.echo(f"exact variant vs {artifact.name} on {g.data}: agreement {g.top1_agreement:.2%}, "
               f"max |diff| {g.max_abs_diff:.3g} ({g.max_rel_diff:.1e} of max logit)")
    click.echo(f"maintain-aspect-ratio: {result.geometry['chosen']} (measured); fidelity vs PyTorch "
               "(nvinfer preprocessing emulated, not run on DeepStream):")
    for r in result.fidelity:
        p = r.parity
        drop = "" if p.top1_drop is None else f", drop {p.top1_drop:.2f} points"
        click.echo(f"  {r.data}, {r.normalisation}: agreement {p.top1_agreement:.2%}{drop}, "
                   f"max |diff| {p.max_abs_diff:.3g}")
    click.echo(f"time: {time.perf_counter() - t0:.1f} s")
# --- end deepstream ---------------------------------------------------------------------------


def main() -> None:
    cli(prog_name="resnet-export")


if __name__ == "__main__":
    main()
