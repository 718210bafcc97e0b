"""``resnet-export``: onnx, fp16, int8, trt and pipeline."""

from __future__ import annotations

from pathlib import Path

import click

from resnet_deploy.cli.common import CONTEXT_SETTINGS, Group, debug_option, group_setup, overwrite_option


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@debug_option
def cli(debug: bool) -> None:
    """Export a trained ResNet to ONNX, FP16, INT8 and TensorRT, each proven against PyTorch.

    \b
    Example:
      resnet-export onnx --arch resnet50 --weights model.pth -o resnet50.onnx
    """
    group_setup(debug)


def weights_options(f):
    f = click.option("--num-classes", type=click.IntRange(min=1), default=None,
                     help="Classifier head size (default: the checkpoint's, else 1000).")(f)
    f = click.option("--weights", default=None, metavar="PATH|torchvision|demo",
                     help="A .pth/.safetensors state_dict, torchvision's weights, or the built-in demo "
                          "(trained on digits). Default: untrained (random, seed 0).")(f)
    f = click.option("--arch", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]),
                     default="resnet50", show_default=True, help="ResNet variant.")(f)
    return f


@cli.command("onnx")
@weights_options
@click.option("--image-size", type=click.IntRange(min=32), default=None,
              help="Input (crop) size in pixels [default: the weights' preset, else 224].")
@click.option("--resize", type=click.IntRange(min=32), default=None,
              help="Short side before the center crop [default: the preset, else size*256/224].")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Largest batch the graph declares (the batch is dynamic from 1).")
@click.option("--opset", type=click.IntRange(17, 20), default=18, show_default=True,
              help="ONNX opset (18 parses on TensorRT 10.0+ / JetPack 6).")
@click.option("--input-format", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="float: normalised NCHW; uint8: raw NHWC RGB, normalised inside the graph.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--eval-data", default=None, metavar="SRC",
              help="Image folder, .npy/.npz or 'digits': gate top-1 agreement and logits vs PyTorch on it.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .onnx (its manifest goes to OUTPUT.json).")
@overwrite_option
@debug_option
def onnx_cmd(arch, weights, num_classes, image_size, resize, max_batch, opset, input_format, no_simplify,
             eval_data, output, overwrite, debug):
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
    loaded = load_model(arch, weights, num_classes=num_classes)
    config = OnnxConfig(image_size=image_size, resize=resize, max_batch=max_batch, opset=opset,
                        input_format=input_format, simplify=not no_simplify)
    result = onnx_from_torch(loaded, output, config=config, eval_source=source, overwrite=overwrite)
    report_artifact(result.path, result.manifest)
    steps = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in result.seconds.items())
    click.echo(f"time: {time.perf_counter() - t0:.1f} s in all ({steps})")


@cli.command("trt")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output engine .plan (its manifest goes to OUTPUT.json).")
@click.option("--min-batch", type=int, default=None, help="Profile minimum batch [default: the ONNX manifest's].")
@click.option("--opt-batch", type=int, default=None, help="Batch TensorRT tunes for [default: the manifest's].")
@click.option("--max-batch", type=int, default=None, help="Profile maximum batch [default: the manifest's].")
@click.option("--workspace", type=int, default=None, metavar="MiB",
              help="Workspace memory limit in MiB (keep small on Jetson: memory is shared).")
@click.option("--opt-level", type=int, default=3, show_default=True, help="Builder optimization level 0..5.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache file: read if present, written back after the build.")
@click.option("--hardware-compat", is_flag=True, help="Build for any Ampere+ discrete GPU (slower engines).")
@click.option("--version-compat", is_flag=True, help="Loadable by later TensorRT of the same major version.")
@click.option("--inspect", is_flag=True, help="Print the engine inspector's layers and precisions as JSON.")
@overwrite_option
@debug_option
def trt_cmd(model, output, min_batch, opt_batch, max_batch, workspace, opt_level, timing_cache, hardware_compat,
            version_compat, inspect, overwrite, debug):
    """Build a strongly typed TensorRT engine from MODEL (.onnx): precision comes from the ONNX itself.

    \b
    Example:
      resnet-export trt resnet50.int8.onnx -o resnet50.int8.plan --max-batch 32 --timing-cache trt.cache
    """
    import json

    from resnet_deploy.export.tensorrt import EngineConfig, engine_from_onnx, inspect_engine

    config = EngineConfig(min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, workspace_mib=workspace,
                          optimization_level=opt_level, timing_cache=timing_cache,
                          hardware_compatibility=hardware_compat, version_compatible=version_compat,
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
    click.echo(f"wrote {path} ({size_mb:.1f} MB, {manifest.arch}, {manifest.precision}, "
               f"input {inp.dtype} {inp.layout} {list(inp.shape)}, batch {manifest.batch.min}..{manifest.batch.max})")
    p = manifest.parity or {}
    if p:
        acc = "" if p.get("top1") is None else f"top-1 {p['top1']:.2%} (PyTorch {p['top1_ref']:.2%}), "
        click.echo(f"parity vs PyTorch on {p['data']}: {acc}agreement {p['top1_agreement']:.2%}, "
                   f"max |diff| {p['max_abs_diff']:.3g} ({p['max_rel_diff']:.1e} of max logit)")


def main() -> None:
    cli(prog_name="resnet-export")


if __name__ == "__main__":
    main()
