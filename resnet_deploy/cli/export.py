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
