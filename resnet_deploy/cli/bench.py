"""``resnet-bench``: trt, onnx, torch, compare and cpu-table."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from resnet_deploy.archs import ARCH_NAMES, MODEL_NAMES
from resnet_deploy.cli.common import (
    CONTEXT_SETTINGS,
    Group,
    batch_list,
    debug_option,
    group_setup,
    progress,
    table,
    thread_count,
)
from resnet_deploy.cli.serve import triton_bench_cmd


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@debug_option
def cli(debug: bool) -> None:
    """Measure throughput and latency, and accuracy parity against PyTorch.

    \b
    Example:
      resnet-bench onnx model.onnx --batch 1,8 --data digits --json report.json
    """
    group_setup(debug)


# ----------------------------------------------------------------------------- shared options


def timing_options(f: Callable) -> Callable:
    for option in reversed([
        click.option("--batch", "batches", callback=batch_list, default="1,8", show_default=True, metavar="1,8,32",
                     help="Batch sizes to time, comma-separated."),
        click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="S",
                     help="Untimed warmup per batch size, seconds (at least one call)."),
        click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
                     metavar="S", help="Timed run per batch size, seconds (and at least 10 iterations)."),
        click.option("--iterations", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Exactly N timed iterations per batch size (instead of --duration)."),
        click.option("--threads", type=click.IntRange(min=1), callback=thread_count, default=None, metavar="N",
                     help="CPU threads (onnxruntime intra-op, torch). Default: the CPUs this process may use."),
        click.option("--data", default=None, metavar="SRC",
                     help="Image folder, .npy/.npz or 'digits': accuracy and parity on it, and the timing input "
                          "(its first batch, repeated). Default: time seeded random input, no accuracy."),
        click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Use a seeded subset of N samples of --data."),
        click.option("--reference", default=None, metavar="REF",
                     help="What parity compares with: auto, torch (the PyTorch model rebuilt from the manifest), "
                          "recorded (PyTorch's answers recorded beside the artifact at export), a .onnx or .plan, "
                          "torch:ARCH[:WEIGHTS], a .pth/.safetensors (with --arch), or none. Default auto: torch "
                          "where it is installed, else recorded, else none (speed only)."),
        click.option("--max-drop", type=click.FloatRange(min=0), default=None, metavar="POINTS",
                     help="Gate: exit 1 if top-1 (a segmenter: mIoU on the data's masks) drops more than this "
                          "many points below the reference."),
        click.option("--min-agreement", type=click.FloatRange(0, 100), default=None, metavar="PERCENT",
                     help="Gate: exit 1 if fewer than this percent of top-1 answers (a segmenter: of pixels' "
                          "classes) agree with the reference."),
        click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     metavar="OUT", help="Write the report as JSON (schema: docs/measurements.md)."),
        click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     metavar="OUT.png", help="Plot throughput against batch and the latency distribution."),
        debug_option,
    ]):
        f = option(f)
    return f


def strict_cpu_option(f: Callable) -> Callable:
    return click.option("--strict-cpu", is_flag=True,
                        help="Refuse a CPU INT8 artifact whose manifest says this CPU's INT8 kernels do not compute "
                             "it exactly (default: a warning).")(f)


def _echo_int8_host(reports_sessions) -> None:
    """Next to the parity: say when it was measured on a CPU outside the INT8 artifact's families."""
    for report, session in reports_sessions:
        fit = getattr(session, "int8_host", None)
        if fit is not None and not fit.ok:
            measured = "the parity above is what this CPU computes" if report.parity is not None else \
                "run with --data to measure what this CPU computes"
            click.secho(f"Warning: {report.model}: {fit.host.family or 'unknown'} CPU, outside the families this INT8 "
                        f"artifact is exact on; {measured}", fg="yellow")


def reference_pair_options(f: Callable) -> Callable:
    f = click.option("--weights", "ref_weights", default=None, metavar="PATH|torchvision|demo",
                     help="With --arch: the reference's weights.")(f)
    f = click.option("--arch", "ref_arch", type=click.Choice(MODEL_NAMES), default=None,
                     help="The PyTorch reference's arch (with --weights), instead of --reference.")(f)
    return f


@contextlib.contextmanager
def _bar(label: str) -> Iterator[Callable[[float], None]]:
    """click's progress bar on stderr, fed fractions done; nothing at all when stderr is not a terminal."""
    if not sys.stderr.isatty():  # click would still print each label: noise in logs and CI
        yield lambda fraction: None
        return
    steps = 1000
    with progress(steps, label) as bar:
        done = [0]

        def update(fraction: float) -> None:
            n = int(fraction * steps)
            bar.update(n - done[0])
            done[0] = n

        yield update


def _prepare(json_out: Path | None, plot_out: Path | None, data: str | None, count: int | None,
             config_kwargs: dict):
    """Check outputs and options before any work; open the data source."""
    from resnet_deploy.benchmarks.harness import BenchConfig
    from resnet_deploy.data import open_source
    from resnet_deploy.publish import check_destination

    for out in (json_out, plot_out):
        if out is not None:
            check_destination(out, overwrite=True)  # a report is re-measured, not an artifact: replace it
    if plot_out is not None and plot_out.suffix.lower() != ".png":
        raise click.BadParameter(f"{plot_out}: the plot is a PNG (name it OUT.png)", param_hint="--plot")
    if plot_out is not None:
        from resnet_deploy.extras import require_export

        require_export("matplotlib", needed_by="`plot`")  # before any work
    if count is not None and data is None:
        raise click.BadParameter("--count needs --data", param_hint="--count")
    config = BenchConfig(**config_kwargs)
    source = open_source(data, split="eval", count=count) if data else None
    return config, source


def _gate(max_drop: float | None, min_agreement: float | None):
    from resnet_deploy.parity import Gate

    return Gate(max_drop=max_drop, min_agreement=None if min_agreement is None else min_agreement / 100.0)


def _threads(threads: int | None) -> int:
    from resnet_deploy.benchmarks.environment import default_threads

    return threads or default_threads()


def _single(opened, *, reference_text, ref_arch, ref_weights, options, config, source, gate, threads, cuda_graph,
            json_out, plot_out) -> None:
    """Benchmark one opened model; print, write JSON and plot."""
    from resnet_deploy.benchmarks.benchmark import benchmark
    from resnet_deploy.benchmarks.report import runs_rows, write_json
    from resnet_deploy.benchmarks.specs import choose_reference

    reference = why = None
    if source is not None or reference_text is not None:
        choice = choose_reference(reference_text, candidate=opened, options=options, arch=ref_arch,
                                  weights=ref_weights, source=source)
        reference, why = choice.reference, choice.why
    report = benchmark(opened, config=config, source=source, reference=reference, gate=_gate(*gate),
                       threads=threads, cuda_graph=cuda_graph, progress=_bar, no_parity=why)
    env = report.environment
    click.echo(f"{report.model}: {opened.session.description}, {report.precision}, on {report.device}"
               f" ({env.get('cpu') or '?'}, {threads} threads, load {', '.join(map(str, env.get('load_avg', [])))})")
    click.echo(table(*runs_rows(report)))
    _note_disturbed([report])
    _echo_accuracy(report)
    _echo_int8_host([(report, opened.session)])
    if json_out is not None:
        write_json(json_out, report.to_dict())
        click.echo(f"wrote {json_out}")
    if plot_out is not None:
        from resnet_deploy.benchmarks.plot import plot_reports

        plot_reports([report], plot_out)
        click.echo(f"wrote {plot_out}")


def _bench_file(kind, path, open_options, *, timing, threads, data, count, reference, ref_arch, ref_weights, gate,
                json_out, plot_out) -> None:
    """``resnet-bench trt|onnx PATH``: open the file with ``open_options`` and benchmark it."""
    from resnet_deploy.benchmarks.specs import OpenOptions, file_spec, open_model

    config, source = _prepare(json_out, plot_out, data, count, _timing_kwargs(*timing))
    threads = _threads(threads)
    options = OpenOptions(threads=threads, **open_options)
    opened = open_model(file_spec(kind, path), options=options)
    with opened.session:
        _single(opened, reference_text=reference, ref_arch=ref_arch, ref_weights=ref_weights, options=options,
                config=config, source=source, gate=gate, threads=threads, cuda_graph=options.cuda_graph,
                json_out=json_out, plot_out=plot_out)


def _note_disturbed(reports) -> None:
    from resnet_deploy.benchmarks.report import disturbed_note

    if (note := disturbed_note(reports)) is not None:
        click.secho(f"Note: {note}", fg="yellow", err=True)


def _echo_accuracy(report) -> None:
    if report.task != "classify":
        _echo_dense_accuracy(report)
        return
    acc, par = report.accuracy, report.parity
    if acc is not None:
        if acc["top1"] is None:
            click.echo(f"accuracy on {acc['data']}: unlabelled data, no accuracy")
        else:
            click.echo(f"accuracy on {acc['data']}: top-1 {acc['top1']:.2%}, top-5 {acc['top5']:.2%}")
    if par is not None:
        ref = "" if par["top1_ref"] is None else f"top-1 {par['top1_ref']:.2%} (drop {par['top1_drop']:.2f} points), "
        click.echo(f"parity vs {par['reference']}: {ref}agreement {par['top1_agreement']:.2%}, "
                   f"max |diff| {par['max_abs_diff']:.3g}, min cosine {par['cosine_min']:.6f}")
    elif report.parity_not_checked is not None:
        click.echo(f"parity: not checked ({report.parity_not_checked})")


def _echo_dense_accuracy(report) -> None:
    """A segmenter's mIoU and pixel agreement, a backbone's worst output, in one line each."""
    acc, par = report.accuracy, report.parity
    if acc is not None and report.task == "segment":
        miou = "no masks, no mIoU" if acc["miou"] is None else f"mIoU {acc['miou']:.2%}"
        click.echo(f"accuracy on {acc['data']}: {miou}")
    if par is not None:
        figures = []
        if par.get("pixel_agreement") is not None:
            drop = "" if par.get("miou_drop") is None else f" (mIoU drop {par['miou_drop']:.2f} points)"
            figures.append(f"pixel agreement {par['pixel_agreement']:.4%}{drop}")
        for name, o in par["outputs"].items():
            figures.append(f"{name}: max rel diff {o['max_rel_diff']:.2e}, min cosine {o['cosine_min']:.6f}")
        click.echo(f"parity vs {par['reference']}: {'; '.join(figures)}")
    elif report.parity_not_checked is not None:
        click.echo(f"parity: not checked ({report.parity_not_checked})")


def _timing_kwargs(batches, warmup, duration, iterations) -> dict:
    return {"batches": tuple(batches), "warmup_s": warmup, "duration_s": duration, "iterations": iterations}


# ----------------------------------------------------------------------------- commands


@cli.command("trt")
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--cuda-graph", is_flag=True, help="Capture the engine call in a CUDA graph per batch size and replay it.")
@click.option("--allow-unverified", is_flag=True,
              help="Load an engine without a resnet-deploy manifest (e.g. built by trtexec) that you trust.")
@reference_pair_options
@timing_options
def trt_cmd(plan, cuda_graph, allow_unverified, ref_arch, ref_weights, batches, warmup, duration, iterations, threads,
            data, count, reference, max_drop, min_agreement, json_out, plot_out, debug):
    """Benchmark a TensorRT engine: end-to-end latency with copies, and GPU compute time (CUDA events).

    \b
    Example:
      resnet-bench trt model.plan --batch 1,8,32 --cuda-graph --data digits --json trt.json
    """
    _bench_file("trt", plan, {"cuda_graph": cuda_graph, "allow_unverified": allow_unverified},
                timing=(batches, warmup, duration, iterations), threads=threads, data=data, count=count,
                reference=reference, ref_arch=ref_arch, ref_weights=ref_weights, gate=(max_drop, min_agreement),
                json_out=json_out, plot_out=plot_out)


@cli.command("onnx")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="onnxruntime execution provider.")
@strict_cpu_option
@reference_pair_options
@timing_options
def onnx_cmd(model, provider, strict_cpu, ref_arch, ref_weights, batches, warmup, duration, iterations, threads, data,
             count,
             reference, max_drop, min_agreement, json_out, plot_out, debug):
    """Benchmark an ONNX model in onnxruntime.

    \b
    Example:
      resnet-bench onnx resnet50.int8.onnx --batch 1,8 --threads 2 --data digits --max-drop 1.0
    """
    _bench_file("onnx", model, {"provider": provider, "strict_cpu": strict_cpu},
                timing=(batches, warmup, duration, iterations), threads=threads, data=data, count=count,
                reference=reference, ref_arch=ref_arch, ref_weights=ref_weights, gate=(max_drop, min_agreement),
                json_out=json_out, plot_out=plot_out)


@cli.command("torch")
@click.option("--arch", type=click.Choice(MODEL_NAMES), default="resnet50", show_default=True,
              help="ResNet variant, or a segmentation model (fcn_resnet18 ...).")
@click.option("--weights", default=None, metavar="PATH|torchvision|demo",
              help="A .pth/.safetensors state_dict, torchvision's weights, or the built-in demo. Default: untrained.")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Head size (default: the checkpoint's).")
@click.option("--image-size", type=click.IntRange(min=32), default=None,
              help="Input size in pixels [default: the weights' preset, else 224].")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda", help="Where PyTorch runs.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16 needs --device cuda.")
@click.option("--channels-last", is_flag=True, help="NHWC memory format (the fast layout on GPUs).")
@click.option("--cuda-graph", is_flag=True, help="Capture and replay a CUDA graph per batch size (--device cuda).")
@timing_options
def torch_cmd(arch, weights, num_classes, image_size, device, precision, channels_last, cuda_graph, batches, warmup,
              duration, iterations, threads, data, count, reference, max_drop, min_agreement, json_out, plot_out,
              debug):
    """Benchmark the PyTorch model itself (eager), the baseline every artifact is measured against.

    \b
    Example:
      resnet-bench torch --arch resnet50 --batch 1,8 --threads 2
    """
    from resnet_deploy.benchmarks.specs import OpenOptions, check_torch_device, open_model, parse_spec

    check_torch_device(device)
    config, source = _prepare(json_out, plot_out, data, count, _timing_kwargs(batches, warmup, duration, iterations))
    threads = _threads(threads)
    options = OpenOptions(threads=threads, device=device, precision=precision, channels_last=channels_last,
                          cuda_graph=cuda_graph, image_size=image_size, num_classes=num_classes)
    spec = parse_spec(f"torch:{arch}" + (f":{weights}" if weights else ""))
    opened = open_model(spec, options=options)
    _single(opened, reference_text=reference, ref_arch=None, ref_weights=None, options=options, config=config,
            source=source, gate=(max_drop, min_agreement), threads=threads, cuda_graph=cuda_graph, json_out=json_out,
            plot_out=plot_out)


@cli.command("compare")
@click.argument("specs", nargs=-1, required=True, metavar="MODEL...")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="onnxruntime execution provider for .onnx models.")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda", help="Where torch: models run.")
@click.option("--cuda-graph", is_flag=True, help="CUDA graphs for TensorRT engines (and torch: on --device cuda).")
@click.option("--baseline", default=None, metavar="MODEL",
              help="The model speed-ups are relative to (default: the first torch: model, if any).")
@strict_cpu_option
@timing_options
def compare_cmd(specs, provider, device, cuda_graph, baseline, strict_cpu, batches, warmup, duration, iterations, threads, data,
                count, reference, max_drop, min_agreement, json_out, plot_out, debug):
    """Benchmark several models on the same data and batch sizes: one table, fastest first.

    MODEL is a .onnx or .plan file, onnx:PATH, trt:PATH, or torch:ARCH[:WEIGHTS] (the PyTorch
    model, e.g. torch:resnet18:demo). Ranked by throughput at the largest batch; accuracy columns
    come from --data (top-1/top-5 in percent, agreement and drop against each model's reference).

    \b
    Example:
      resnet-bench compare torch:resnet18:demo demo18.onnx demo18.int8.onnx --data digits --batch 1,8
    """
    from resnet_deploy.benchmarks.benchmark import compare
    from resnet_deploy.benchmarks.report import compare_rows, rank, write_json
    from resnet_deploy.benchmarks.specs import (OpenOptions, Opened, check_torch_device, open_model, open_reference,
                                                parse_spec)

    parsed = [parse_spec(s) for s in specs]
    if len({s.text for s in parsed}) != len(parsed):
        raise click.BadParameter("a model is named twice", param_hint="MODEL")
    if baseline is not None and baseline not in specs:
        raise click.BadParameter(f"{baseline!r} is not one of the models compared", param_hint="--baseline")
    if any(s.kind == "torch" for s in parsed):
        check_torch_device(device)
    config, source = _prepare(json_out, plot_out, data, count, _timing_kwargs(batches, warmup, duration, iterations))
    threads = _threads(threads)
    options = OpenOptions(threads=threads, provider=provider, device=device, cuda_graph=cuda_graph,
                          strict_cpu=strict_cpu)
    with contextlib.ExitStack() as stack:
        models = []
        for spec in parsed:
            # --cuda-graph on a CPU run of torch: models means TensorRT's graphs only
            torch_cpu = spec.kind == "torch" and not device.startswith("cuda")
            opened = open_model(spec, options=dataclasses.replace(options, cuda_graph=False) if torch_cpu else options)
            stack.callback(opened.session.close)
            models.append(opened)
        refs = []
        shared = {}  # one reference session per distinct reference
        for opened in models:
            ref = None
            if source is not None or reference is not None:
                ref = open_reference(reference, candidate=opened, options=options, source=source)
                if isinstance(ref, Opened):
                    if ref.label in shared:
                        ref.session.close()
                        ref = shared[ref.label]
                    else:
                        shared[ref.label] = ref
                        stack.callback(ref.session.close)
            refs.append(ref)
        reports = compare(models, references=refs, config=config, source=source, gate=_gate(max_drop, min_agreement),
                          threads=threads, cuda_graph=cuda_graph, progress=_bar)
    base_label = baseline or next((s.text for s in parsed if s.kind == "torch"), None)
    base = next((r for r in reports if r.model == base_label), None)
    env = reports[0].environment
    click.echo(f"{len(reports)} models on {env.get('cpu') or '?'}, {threads} threads, "
               f"load {', '.join(map(str, env.get('load_avg', [])))}; "
               f"timing input: {reports[0].timing['inputs']}")
    click.echo(table(*compare_rows(reports, baseline=base)))
    _note_disturbed(reports)
    if refs := sorted({f"{r.model} vs {r.parity['reference']}" for r in reports if r.parity is not None}):
        click.echo("parity: " + "; ".join(refs))
    _echo_int8_host([(r, m.session) for r, m in zip(reports, models)])
    from resnet_deploy.benchmarks.report import int8_speed_notes

    for note in int8_speed_notes(reports):
        click.secho(f"Note: {note}", fg="yellow")
    if json_out is not None:
        write_json(json_out, {"ranking": [r.model for r in rank(reports)], "reports": [r.to_dict() for r in reports]})
        click.echo(f"wrote {json_out}")
    if plot_out is not None:
        from resnet_deploy.benchmarks.plot import plot_reports

        plot_reports(reports, plot_out)
        click.echo(f"wrote {plot_out}")


@cli.command("cpu-table")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the artifacts, the JSON and the Markdown table (created).")
@click.option("--threads", type=click.IntRange(min=1), callback=thread_count, default=2, show_default=True, help="CPU threads.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved rounds; each figure is the median over rounds.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True, metavar="S",
              help="Timed seconds per model, batch and round.")
@click.option("--arch", "archs", multiple=True, type=click.Choice(ARCH_NAMES), default=("resnet18", "resnet50"),
              show_default=True, help="Archs to include (repeat the option).")
@click.option("--batch", "batches", callback=batch_list, default="1,8", show_default=True, help="Batch sizes.")
@debug_option
def cpu_table_cmd(out_dir, threads, rounds, duration, archs, batches, debug):
    """The README's CPU table: PyTorch eager FP32 vs onnxruntime FP32, FP16 and INT8 (both targets).

    \b
    Example:
      resnet-bench cpu-table --out /tmp/cpu-table --threads 2
    """
    from resnet_deploy.extras import check_export_toolchain

    check_export_toolchain(needed_by="resnet-bench cpu-table")
    from resnet_deploy.cpu_table import TableConfig, cpu_table

    result = cpu_table(out_dir, config=TableConfig(threads=threads, rounds=rounds, duration_s=duration,
                                                   archs=tuple(archs), batches=tuple(batches)), log=click.echo)
    click.echo(result.markdown)


cli.add_command(triton_bench_cmd)


def main() -> None:
    cli(prog_name="resnet-bench")


if __name__ == "__main__":
    main()
