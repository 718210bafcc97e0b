"""``resnet-export pipeline``: every artifact in one go, each gated, benchmarked side by side, reported.

Stages: FP32 ONNX -> FP16 -> INT8 for TensorRT (ModelOpt Q/DQ) -> INT8 for CPUs (onnxruntime
U8S8) -> TensorRT engines from the FP16 and INT8 graphs (where TensorRT and a GPU exist; else the
stage is reported as skipped, with the reason) -> parity and timing of every artifact against the
PyTorch model on the same data and batch sizes -> ``report.md``, ``report.json``, ``throughput.png``
(and for a segmenter ``overlay.png``: input, PyTorch's and the INT8 artifacts' class maps side by side).

The task (``archs.TASKS``) is ``classify`` or ``segment``; a segmenter's gates and columns are its
own (pixel agreement, mIoU and its drop on the data's masks).

This module orchestrates; the work is the stages' own (export, calibration, benchmarks). It sits
beside ``cli`` in the dependency order: cli -> pipeline -> export, calibration, benchmarks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.publish import check_destination, make_folder
from resnet_deploy.weights import Weights

Log = Callable[[str], None]


@dataclass(frozen=True)
class PipelineConfig:
    arch: str = "resnet18"  # a ResNet, or a segmentation model (archs.SEGMENTERS)
    task: str | None = None  # None: the arch's own (a ResNet classifies); "segment": its FCN (``archs.resolve_task``)
    weights: Weights = Weights("demo")
    num_classes: int | None = None
    image_size: int | None = None  # None: the weights' preset (demo: 32), else 224
    resize: int | None = None
    min_size: int | None = None  # a segmenter's input height/width bounds (None: the weights' own, else 32..1024)
    max_size: int | None = None
    max_batch: int = 64
    # None: the weights' own data (the demo's digits: train split to calibrate, held-out split to evaluate);
    # calibration falls back to digits, evaluation must be named for other weights.
    calib_data: str | None = None
    eval_data: str | None = None
    calib_count: int = 512
    method: str = "entropy"
    max_drop: float = 1.0  # INT8 gate: top-1 points (a segmenter: mIoU points where the data has masks)
    tensorrt: bool = True  # try the engine stage (skipped with a reason where TensorRT or a GPU is missing)
    batches: tuple[int, ...] = (1, 8)
    warmup_s: float = 0.5
    duration_s: float = 2.0
    threads: int | None = None  # CPU threads for onnxruntime and torch; None: the CPUs this process may use

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", Weights.parse(self.weights))  # a Python caller may pass any spelling


@dataclass
class Stage:
    name: str
    status: str  # "ok" | "skipped" | "failed"
    artifact: str | None = None
    seconds: float = 0.0
    note: str = ""


@dataclass
class PipelineResult:
    out_dir: Path
    stages: list[Stage]
    summary: list[dict[str, Any]]
    reports: list[Any] = field(repr=False, default_factory=list)
    notes: list[str] = field(default_factory=list)  # INT8 that is not faster here, and why (report.int8_speed_notes)
    task: str = "classify"  # what the summary's columns measure (SUMMARY_METRICS)


def artifact_names(arch: str) -> dict[str, str]:
    """File names of the stages' artifacts (each gets ``<name>.json`` beside it)."""
    return {
        "onnx": f"{arch}.onnx",
        "fp16": f"{arch}.fp16.onnx",
        "int8": f"{arch}.int8.onnx",
        "int8-cpu": f"{arch}.int8-cpu.onnx",
        "trt-fp16": f"{arch}.fp16.plan",
        "trt-int8": f"{arch}.int8.plan",
    }


REPORT_FILES = ("report.md", "report.json", "throughput.png")
OVERLAY_FILE = "overlay.png"  # segment only
OVERLAY_IMAGES = 4  # held-out images in the overlay
FP16_CALIB_COUNT = 32
#: the tasks the pipeline builds (a backbone has no accuracy of its own: export it with resnet-export onnx/fp16/int8)
PIPELINE_TASKS = ("classify", "segment")


def report_files(task: str) -> tuple[str, ...]:
    return REPORT_FILES + ((OVERLAY_FILE,) if task == "segment" else ())


def prepare_out_dir(out_dir: Path, arch: str, *, overwrite: bool, task: str = "classify") -> Path:
    """Create ``out_dir`` (its parent must exist) and refuse, before any work, to replace files without --overwrite."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder")
    if not out_dir.parent.is_dir():
        raise UsageError(f"{out_dir.parent}: folder does not exist")
    if not out_dir.exists():  # nothing inside to refuse: check the parent, then create it
        check_destination(out_dir, overwrite=False)
        return make_folder(out_dir)
    for name in (*artifact_names(arch).values(), *report_files(task)):
        check_destination(out_dir / name, overwrite=overwrite)
        if name.endswith((".onnx", ".plan")):
            check_destination(out_dir / f"{name}.json", overwrite=overwrite)
    return out_dir


def resolve_config(config: PipelineConfig) -> PipelineConfig:
    """``config`` with its defaults filled in: the model and task (``archs.resolve_task``), data from the weights
    (the demo's digits, or digits-seg for its segmenter), threads from the machine."""
    from resnet_deploy.archs import resolve_task
    from resnet_deploy.benchmarks.environment import default_threads

    try:
        arch, task = resolve_task(config.arch, config.task)
    except ValueError as exc:
        raise UsageError(str(exc).replace("task ", "`task` ", 1)) from exc
    if task not in PIPELINE_TASKS:
        raise UsageError(f"the pipeline builds classifiers and segmenters; export a {task} with resnet-export onnx, "
                         "fp16 and int8")
    if task != "classify" and config.image_size is not None:
        raise UsageError("`image_size` is a classifier's crop; a segmenter takes the whole image (set `resize`)")
    if task == "classify" and (config.min_size or config.max_size):
        raise UsageError("`min_size`/`max_size` bound a segmenter's input; a classifier takes `image_size`")
    config = replace(config, arch=arch, task=task)
    own = config.weights.data_for(task)
    if config.eval_data is None and own is None:
        what = "(class sub-folders)" if task == "classify" else "with masks (a VOC root, IMAGES:MASKS)"
        raise UsageError(f"`eval_data` is required for weights other than demo ({config.weights}): labelled "
                         f"held-out images {what} that every gate and the report measure on")
    return replace(config, calib_data=config.calib_data or own or "digits", eval_data=config.eval_data or own,
                   threads=config.threads or default_threads())


def _dense(config: PipelineConfig) -> bool:
    return config.task != "classify"


def run_pipeline(out_dir: str | os.PathLike[str], *, config: PipelineConfig = PipelineConfig(),
                 overwrite: bool = False, log: Log = print, debug: bool = False) -> PipelineResult:
    """Run every stage into ``out_dir``; a missed gate stops the pipeline (GateError, exit 1)."""
    from resnet_deploy.data import open_source
    from resnet_deploy.weights import load_model

    config = resolve_config(config)
    out = prepare_out_dir(Path(out_dir), config.arch, overwrite=overwrite, task=config.task or "classify")
    names = {k: out / v for k, v in artifact_names(config.arch).items()}
    calib = open_source(config.calib_data, split="train", count=config.calib_count)
    # AutoCast keeps every activation of every calibration sample in memory: a small set for FP16.
    calib_fp16 = open_source(config.calib_data, split="train", count=min(config.calib_count, FP16_CALIB_COUNT))
    evaluation = open_source(config.eval_data, split="eval") if config.eval_data else None
    stages: list[Stage] = []

    def stage(name: str, artifact: Path | None, work: Callable[[], str]) -> None:
        log(f"[{len(stages) + 1}] {name} ...")
        t0 = time.perf_counter()
        note = work()
        stages.append(Stage(name, "ok", artifact.name if artifact else None, time.perf_counter() - t0, note))
        log(f"    {stages[-1].status} in {stages[-1].seconds:.1f} s{': ' + note if note else ''}")

    def export_onnx() -> str:
        from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch

        loaded = load_model(config.arch, config.weights, num_classes=config.num_classes, task=config.task)
        onnx_cfg = OnnxConfig(image_size=config.image_size, resize=config.resize, min_size=config.min_size,
                              max_size=config.max_size, max_batch=config.max_batch)
        result = onnx_from_torch(loaded, names["onnx"], config=onnx_cfg, eval_source=evaluation, overwrite=overwrite)
        return _parity_note(result.manifest.parity)

    def export_fp16() -> str:
        from resnet_deploy.export.fp16 import fp16_from_onnx

        result = fp16_from_onnx(names["onnx"], names["fp16"], calib_source=calib_fp16, eval_source=evaluation,
                                overwrite=overwrite, debug=debug)
        return _parity_note(result.manifest.parity)

    def export_int8(target: str, key: str) -> Callable[[], str]:
        def work() -> str:
            from resnet_deploy.calibration.gate import Int8Config
            from resnet_deploy.export.int8 import int8_from_onnx
            from resnet_deploy.parity import int8_gate_with_drop

            cfg = Int8Config(target=target, method=config.method,
                             gate=int8_gate_with_drop(config.task or "classify", config.max_drop))
            result = int8_from_onnx(names["onnx"], names[key], calib_source=calib, config=cfg, eval_source=evaluation,
                                    overwrite=overwrite, debug=debug)
            kept = result.manifest.details.get("kept_high_precision") or []
            return _parity_note(result.manifest.parity) + (f"; {len(kept)} layers kept in high precision" if kept else "")
        return work

    stage("FP32 ONNX", names["onnx"], export_onnx)
    stage("FP16 ONNX", names["fp16"], export_fp16)
    stage("INT8 ONNX for TensorRT", names["int8"], export_int8("tensorrt", "int8"))
    stage("INT8 ONNX for CPUs", names["int8-cpu"], export_int8("cpu", "int8-cpu"))
    engines = _engine_stages(names, config, overwrite=overwrite, stages=stages, log=log)

    log(f"[{len(stages) + 1}] parity and benchmark of every artifact ...")
    t0 = time.perf_counter()
    artifacts = [names["onnx"], names["fp16"], names["int8"], names["int8-cpu"], *engines]
    reports = _benchmark(artifacts, config, evaluation)
    stages.append(Stage("parity and benchmark", "ok", None, time.perf_counter() - t0,
                        f"{len(reports)} models, batches {', '.join(map(str, config.batches))}"))
    summary = summarize(reports, out, config)
    from resnet_deploy.benchmarks.report import disturbed_note, int8_speed_notes

    notes = int8_speed_notes(reports) + [n for n in [disturbed_note(reports)] if n is not None]
    for note in notes:
        log(f"    note: {note}")
    result = PipelineResult(out, stages, summary, reports, notes, config.task or "classify")
    write_reports(result, config)
    if _dense(config):
        write_overlay(out / OVERLAY_FILE, names["onnx"], [names["int8-cpu"], names["int8"]], evaluation)
    return result


def _engine_stages(names: dict[str, Path], config: PipelineConfig, *, overwrite: bool, stages: list[Stage],
                   log: Log) -> list[Path]:
    """TensorRT engines from the FP16 and INT8 graphs, or one 'skipped' stage saying why not."""
    reason = None if config.tensorrt else "disabled (--no-tensorrt)"
    if reason is None:
        reason = tensorrt_unavailable()
    if reason is not None:
        stages.append(Stage("TensorRT engines", "skipped", None, 0.0, reason))
        log(f"[{len(stages)}] TensorRT engines: skipped ({reason})")
        return []
    from resnet_deploy.export.tensorrt import EngineConfig, engine_from_onnx

    built = []
    for src, key in ((names["fp16"], "trt-fp16"), (names["int8"], "trt-int8")):
        log(f"[{len(stages) + 1}] TensorRT engine from {src.name} ...")
        t0 = time.perf_counter()
        result = engine_from_onnx(src, names[key], config=EngineConfig(overwrite=overwrite))
        stages.append(Stage(f"TensorRT engine ({key[4:]})", "ok", names[key].name, time.perf_counter() - t0,
                            f"TensorRT {result.manifest.build.get('tensorrt')} on {result.manifest.build.get('gpu')}"))
        built.append(names[key])
    return built


def tensorrt_unavailable() -> str | None:
    """Why engines cannot be built here (TensorRT, cuda-python or a GPU missing), or None."""
    try:
        from resnet_deploy.runtime import cuda
        from resnet_deploy.runtime.tensorrt import import_tensorrt

        import_tensorrt()
        if cuda.device_count() < 1:
            return "no CUDA device"
    except MissingDependencyError as exc:
        return str(exc)
    except DeployError as exc:  # a CUDA error: no driver, no device
        return f"no usable CUDA device ({exc})"
    return None


def _benchmark(artifacts: list[Path], config: PipelineConfig, evaluation) -> list[Any]:
    """Every artifact and the PyTorch model, same data and batches; each compared with the PyTorch model."""
    from resnet_deploy.benchmarks.benchmark import compare
    from resnet_deploy.benchmarks.harness import BenchConfig
    from resnet_deploy.benchmarks.specs import ModelSpec, OpenOptions, file_spec, open_model

    options = OpenOptions(threads=config.threads, image_size=config.image_size, num_classes=config.num_classes)
    torch_spec = ModelSpec("torch", f"torch:{config.arch}:{config.weights}", arch=config.arch, weights=config.weights)
    if _dense(config):
        options = replace(options, image_size=None)
    reference = open_model(torch_spec, options=options)
    models = [reference] + [open_model(file_spec("trt" if p.suffix == ".plan" else "onnx", p), options=options)
                            for p in artifacts]
    bench = BenchConfig(warmup_s=config.warmup_s, duration_s=config.duration_s,
                        batches=tuple(b for b in config.batches if b <= config.max_batch))
    try:
        return compare(models, references=[None] + [reference] * len(artifacts), config=bench, source=evaluation,
                       threads=config.threads)
    finally:
        for m in models:
            m.session.close()


#: per task: the summary's accuracy keys (from the report's accuracy, its parity, and the reference's own value)
SUMMARY_METRICS = {
    "classify": (("top1", "accuracy"), ("top1_drop", "parity"), ("top1_agreement", "parity")),
    "segment": (("miou", "accuracy"), ("miou_drop", "parity"), ("pixel_agreement", "parity")),
}
_REFERENCE_VALUES = {"top1_drop": 0.0, "top1_agreement": 1.0, "miou_drop": 0.0, "pixel_agreement": 1.0}


def summarize(reports: list[Any], out: Path, config: PipelineConfig) -> list[dict[str, Any]]:
    """One row per model: artifact, precision, size, accuracy, parity and speed at the largest batch."""
    top = max(b for b in config.batches if b <= config.max_batch)
    rows = []
    for rep in reports:
        path = out / rep.model.rsplit("/", 1)[-1] if not rep.model.startswith("torch:") else None
        run = rep.run_at(top)
        found = {"accuracy": rep.accuracy or {}, "parity": rep.parity or {}}
        metrics = {key: found[where].get(key) if path or where == "accuracy" else _REFERENCE_VALUES[key]
                   for key, where in SUMMARY_METRICS[rep.task]}
        rows.append({
            "artifact": path.name if path else rep.model,
            "backend": rep.backend,
            "precision": rep.precision,
            "size_mb": round(path.stat().st_size / 1e6, 2) if path else None,
            **metrics,
            "batch": top,
            "p50_ms": run.to_dict()["latency_ms"]["p50"] if run else None,
            "throughput_ips": run.throughput_ips if run else None,
        })
    return rows


SUMMARY_HEADERS = {
    "classify": ["artifact", "precision", "size MB", "top-1 %", "drop pts", "agree %", "p50 ms", "img/s"],
    "segment": ["artifact", "precision", "size MB", "mIoU %", "mIoU drop pts", "pixel agree %", "p50 ms", "img/s"],
}


def summary_rows(summary: list[dict[str, Any]], task: str = "classify") -> list[list[Any]]:
    def pct(v):
        return None if v is None else round(100 * v, 2)

    (metric, _), (drop, _), (agree, _) = SUMMARY_METRICS[task]
    return [[r["artifact"], r["precision"], r["size_mb"], pct(r[metric]), r[drop],
             pct(r[agree]) if task == "classify" else (None if r[agree] is None else round(100 * r[agree], 3)),
             None if r["p50_ms"] is None else round(r["p50_ms"], 3),
             None if r["throughput_ips"] is None else round(r["throughput_ips"], 1)] for r in summary]


def write_reports(result: PipelineResult, config: PipelineConfig) -> None:
    """``report.json`` (everything), ``report.md`` (tables a person reads), ``throughput.png``."""
    from resnet_deploy.benchmarks.plot import plot_reports
    from resnet_deploy.benchmarks.report import markdown, write_json
    from resnet_deploy.publish import write_text

    out = result.out_dir
    env = result.reports[0].environment if result.reports else {}
    write_json(out / "report.json", {
        "format": "resnet-deploy-pipeline/1",
        "config": {**asdict(config), "weights": config.weights.label, "batches": list(config.batches)},
        "stages": [asdict(s) for s in result.stages],
        "summary": result.summary,
        "notes": result.notes,
        "benchmarks": [r.to_dict() for r in result.reports],
        "environment": env,
    })
    plot_reports(result.reports, out / "throughput.png")
    top = result.summary[0]["batch"] if result.summary else None
    task = config.task or "classify"
    data = result.reports[0].accuracy["data"] if result.reports and result.reports[0].accuracy else "none"
    lines = [
        f"# resnet-deploy pipeline: {config.arch}, weights {config.weights}",
        "",
        f"Evaluation data: {data}; calibration: {config.calib_data} ({config.calib_count} max, {config.method}).",
        f"Speed at batch {top}, {env.get('threads')} threads on {env.get('cpu') or 'this CPU'}; "
        "drop and agreement against the PyTorch FP32 model on the same images.",
        "",
        markdown(SUMMARY_HEADERS[task], summary_rows(result.summary, task)),
        "",
        *[f"Note: {note}" for note in result.notes],
        *([""] if result.notes else []),
        "## Stages",
        "",
        markdown(["stage", "status", "artifact", "seconds", "note"],
                 [[s.name, s.status, s.artifact, round(s.seconds, 1), s.note] for s in result.stages]),
        "",
        "![throughput](throughput.png)",
        "",
        *([f"![PyTorch and INT8 class maps on held-out images]({OVERLAY_FILE})", ""] if task == "segment" else []),
    ]
    write_text(out / "report.md", "\n".join(lines))


def write_overlay(path: Path, fp32: Path, int8s: list[Path], evaluation) -> Path:
    """``overlay.png``: the first held-out images, PyTorch's class maps and each INT8 artifact's, side by side."""
    import contextlib
    import itertools

    from resnet_deploy.benchmarks.plot import plot_overlay
    from resnet_deploy.data import dense_image, mask_at
    from resnet_deploy.manifest import read_manifest
    from resnet_deploy.reference import reference_from_manifest
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    manifest = read_manifest(fp32)
    pp = manifest.preprocess
    with contextlib.ExitStack() as stack:
        models = [("PyTorch FP32", stack.enter_context(reference_from_manifest(manifest, fp32)))]
        models += [(p.name, stack.enter_context(OnnxRuntimeSession(p, manifest=read_manifest(p), provider="cpu")))
                   for p in int8s]
        rows = []
        for frame, mask in itertools.islice(evaluation.masked_frames(), OVERLAY_IMAGES):
            batch = dense_image(frame, pp)
            maps = {}
            for name, session in models:
                outputs = session.run_outputs(batch.as_input(session.input_dtype, pp))
                maps[name] = next(iter(outputs.values()))[0].argmax(axis=0)
            rows.append((batch.images[0], None if mask is None else mask_at(mask, batch.images.shape[1:3]), maps))
    return plot_overlay(rows, path, num_classes=manifest.num_classes, labels=manifest.labels)


def _parity_note(parity: dict[str, Any] | None) -> str:
    if not parity:
        return ""
    ref = parity.get("reference", "pytorch")
    if "pixel_agreement" in parity:  # a segmenter's
        miou = "" if parity.get("miou") is None else f"mIoU {parity['miou']:.2%} (drop {parity['miou_drop']:.2f}), "
        return f"{miou}pixel agreement {parity['pixel_agreement']:.3%} vs {ref}"
    top1 = "" if parity.get("top1") is None else f"top-1 {parity['top1']:.2%}, "
    return f"{top1}agreement {parity['top1_agreement']:.2%} vs {ref}"
