"""The README's CPU table, made by one command: PyTorch eager FP32 against onnxruntime FP32, FP16 and INT8.

    resnet-bench cpu-table --out DIR [--threads 2] [--rounds 5]

Builds ResNet-18 and ResNet-50 at 224x224 with 1,000 classes (untrained: speed does not depend
on the weight values), exports FP32 ONNX, FP16 ONNX (``fp16_from_onnx``) and INT8 ONNX for both
targets (``int8_from_onnx``: symmetric Q/DQ for TensorRT, U8S8 for CPUs; calibrated on real
digit images), reusing artifacts already in DIR. Then every model is timed at every batch size,
interleaved in rounds (a burst of load elsewhere hits all models alike); each figure is the
median over the rounds that no other process disturbed (harness ``other_load_cores``: CPU time
other processes took during the run, from /proc/stat), or over all rounds where none was clean.
Writes DIR/cpu_table.json and DIR/cpu_table.md and returns the Markdown.

It sits beside the pipeline, above ``export`` and ``benchmarks``: it builds artifacts with the
export stages and times them with the harness. ``export_untrained`` is also what the
development scripts in the repository's ``benchmarks/`` folder export their models with.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from resnet_deploy.benchmarks.environment import environment
from resnet_deploy.benchmarks.harness import DISTURBED_CORES, BenchConfig, random_input, time_session
from resnet_deploy.benchmarks.report import markdown, write_json
from resnet_deploy.errors import GateError, UsageError


@dataclass(frozen=True)
class TableConfig:
    threads: int = 2
    rounds: int = 5  # docs/measurements.md's figures are medians of 5
    duration_s: float = 3.0  # per model, batch and round
    warmup_s: float = 1.0
    min_iterations: int = 5  # slow rows (INT8 TensorRT placement on a CPU) would otherwise take 10 x 0.6 s
    archs: tuple[str, ...] = ("resnet18", "resnet50")
    batches: tuple[int, ...] = (1, 8)
    image_size: int = 224
    calib: str = "digits:train"  # real images (scikit-learn's digits, upscaled to 224) to calibrate INT8
    calib_count: int = 128
    eval_count: int = 128  # held-out images for the INT8 stage's own accuracy gate


@dataclass
class Row:
    arch: str
    runtime: str
    precision: str
    path: Path | None  # None: the PyTorch model itself
    note: str = ""  # why a row has no figures
    throughput: dict[int, list[float]] = field(default_factory=dict)  # batch -> img/s per round
    p50: dict[int, list[float]] = field(default_factory=dict)  # batch -> p50 latency ms per round
    disturbed: dict[int, list[bool]] = field(default_factory=dict)  # batch -> other processes busy, per round
    other_cores: list[float] = field(default_factory=list)  # CPU other processes took, each measurement

    def clean(self, batch: int, values: dict[int, list[float]]) -> list[float]:
        """The rounds no other process disturbed; all rounds when every one was disturbed."""
        flags = self.disturbed.get(batch) or [False] * len(values.get(batch, []))
        kept = [v for v, bad in zip(values.get(batch, []), flags) if not bad]
        return kept or values.get(batch, [])

    def median(self, batch: int) -> float | None:
        return statistics.median(v) if (v := self.clean(batch, self.throughput)) else None

    def median_p50(self, batch: int) -> float | None:
        return statistics.median(v) if (v := self.clean(batch, self.p50)) else None


@dataclass
class TableResult:
    rows: list[Row]
    markdown: str
    json_path: Path
    md_path: Path


VARIANTS = [  # (runtime, precision, file suffix)
    ("onnxruntime", "fp32", ".onnx"),
    ("onnxruntime", "fp16", ".fp16.onnx"),
    ("onnxruntime", "int8 (cpu: U8S8)", ".int8-cpu.onnx"),
    ("onnxruntime", "int8 (tensorrt: S8S8)", ".int8-trt.onnx"),
]


def build_artifacts(out_dir: Path, arch: str, config: TableConfig, log: Callable[[str], None]) -> list[Row]:
    """FP32, FP16 and both INT8 ONNX of ``arch`` in ``out_dir`` (reused when present); rows for each."""
    from resnet_deploy.manifest import read_manifest

    fp32 = out_dir / f"{arch}.onnx"
    rows = [Row(arch, "pytorch eager", "fp32", None)]
    if read_manifest(fp32) is None:
        log(f"exporting {fp32} (untrained {arch}, {config.image_size}x{config.image_size})")
        export_untrained(arch, fp32, image_size=config.image_size)
    rows.append(Row(arch, "onnxruntime", "fp32", fp32))
    for runtime, precision, suffix in VARIANTS[1:]:
        path = out_dir / f"{arch}{suffix}"
        note = ""
        if read_manifest(path) is None:
            try:
                log(f"building {path}")
                t0 = time.perf_counter()
                _derive(fp32, path, precision, config)
                log(f"built {path} in {time.perf_counter() - t0:.0f} s")
            except ImportError as exc:  # the stage is not installed (or not written yet)
                note = f"not built: {exc}"
                log(note)
            except GateError as exc:
                note = f"not built: {str(exc)[:200]}"
                log(note)
        rows.append(Row(arch, runtime, precision, None if note else path, note))
    return rows


def untrained_model(arch: str, *, num_classes: int = 1000):
    """``arch`` with seeded random weights (a LoadedModel): speed does not depend on the weight values."""
    from resnet_deploy.weights import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no weights given": intended, speed only
        return load_model(arch, None, num_classes=num_classes)


def export_untrained(arch: str, output: Path, *, image_size: int = 224, max_batch: int = 64) -> Path:
    """The FP32 ONNX of an untrained ``arch`` (seed 0) at ``output``, replacing what is there."""
    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch

    onnx_from_torch(untrained_model(arch), output, config=OnnxConfig(image_size=image_size, max_batch=max_batch),
                    overwrite=True)
    return output


def _derive(fp32: Path, output: Path, precision: str, config: TableConfig) -> None:
    """FP16 or INT8 from the FP32 ONNX, through the export stages (ImportError where a stage is missing)."""
    from resnet_deploy.data import open_source

    evaluation = open_source(config.calib.split(":")[0], split="eval", count=config.eval_count)
    if precision == "fp16":
        from resnet_deploy.export.fp16 import fp16_from_onnx

        # AutoCast keeps every activation of every sample in memory: a few samples measure the ranges.
        calib = open_source(config.calib, split="train", count=16)
        fp16_from_onnx(fp32, output, calib_source=calib, eval_source=evaluation, overwrite=True)
        return
    from resnet_deploy.calibration.gate import Int8Config
    from resnet_deploy.export.int8 import int8_from_onnx

    target = "cpu" if precision.startswith("int8 (cpu") else "tensorrt"
    calib = open_source(config.calib, split="train", count=config.calib_count)
    # max_kept=0: no layer-by-layer fallback; the table measures the fully quantized graph's speed.
    int8_from_onnx(fp32, output, calib_source=calib, eval_source=evaluation,
                   config=Int8Config(target=target, max_kept=0), overwrite=True)


def cpu_table(out_dir: str | Path, *, config: TableConfig = TableConfig(),
              log: Callable[[str], None] = print) -> TableResult:
    """Build (or reuse) the artifacts, time every row in interleaved rounds, write JSON and Markdown."""
    from resnet_deploy.benchmarks.specs import ModelSpec, OpenOptions, open_model, open_torch
    from resnet_deploy.publish import make_folder

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: not a folder")
    make_folder(out_dir)
    rows = [row for arch in config.archs for row in build_artifacts(out_dir, arch, config, log)]
    options = OpenOptions(threads=config.threads, image_size=config.image_size)
    sessions = {}
    for row in rows:
        if row.note:
            continue
        if row.path is None:
            sessions[id(row)] = open_torch(ModelSpec("torch", f"torch:{row.arch}", arch=row.arch), untrained_model(row.arch),
                                           options=options).session
        else:
            sessions[id(row)] = open_model(ModelSpec("onnx", str(row.path), path=row.path), options=options).session
    bench = BenchConfig(warmup_s=config.warmup_s, duration_s=config.duration_s, min_iterations=config.min_iterations)
    env_before = environment(threads=config.threads)
    t0 = time.perf_counter()
    for r in range(config.rounds):
        for batch in config.batches:
            for row in rows:
                if row.note:
                    continue
                session = sessions[id(row)]
                run = time_session(session, random_input(session, batch), config=replace(bench, batches=(batch,)))
                row.throughput.setdefault(batch, []).append(run.throughput_ips)
                row.p50.setdefault(batch, []).append(float(run.to_dict()["latency_ms"]["p50"]))
                row.disturbed.setdefault(batch, []).append(run.disturbed)
                if run.other_load_cores is not None:
                    row.other_cores.append(run.other_load_cores)
                busy = "" if run.other_load_cores is None else f" (other processes: {run.other_load_cores:.2f} cores)"
                log(f"round {r + 1}/{config.rounds} batch {batch} {row.arch} {row.runtime} {row.precision}: "
                    f"{run.throughput_ips:.1f} img/s{busy}")
    for session in sessions.values():
        session.close()
    env = environment(threads=config.threads)
    env["load_avg_before"] = env_before.get("load_avg")
    text = table_markdown(rows, config, env, minutes=(time.perf_counter() - t0) / 60)
    json_path = out_dir / "cpu_table.json"
    md_path = out_dir / "cpu_table.md"
    write_json(json_path, {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
                           "environment": env, "rows": [_row_dict(row) for row in rows]})
    from resnet_deploy.publish import write_text

    write_text(md_path, text + "\n")
    return TableResult(rows, text, json_path, md_path)


def _row_dict(row: Row) -> dict[str, Any]:
    return {"arch": row.arch, "runtime": row.runtime, "precision": row.precision,
            "model": None if row.path is None else row.path.name, "note": row.note or None,
            "throughput_ips": {str(b): v for b, v in row.throughput.items()},
            "latency_p50_ms": {str(b): v for b, v in row.p50.items()},
            "disturbed": {str(b): v for b, v in row.disturbed.items()},
            "other_load_cores": row.other_cores,
            "median_throughput_ips": {str(b): row.median(b) for b in row.throughput}}


def speedups(rows: list[Row], batch: int) -> dict[int, float | None]:
    """Each row's median throughput over its arch's PyTorch eager FP32 row, at ``batch`` (keyed by id)."""
    base = {row.arch: row.median(batch) for row in rows if row.path is None and not row.note}
    return {id(row): (None if not base.get(row.arch) or row.median(batch) is None
                      else row.median(batch) / base[row.arch]) for row in rows}


def table_markdown(rows: list[Row], config: TableConfig, env: dict[str, Any], *, minutes: float) -> str:
    headers = ["model", "runtime", "precision"]
    for b in config.batches:
        headers += [f"batch {b} img/s", f"batch {b} p50 ms"]
    top = max(config.batches)
    headers.append(f"x PyTorch (batch {top})")
    ratio = speedups(rows, top)
    body = []
    for row in rows:
        cells: list[Any] = [row.arch, row.runtime, row.precision]
        for b in config.batches:
            cells += [row.median(b), row.median_p50(b)]
        cells.append(None if ratio[id(row)] is None else round(ratio[id(row)], 2))
        body.append(cells)
    versions = env.get("versions", {})
    lines = [markdown(headers, body), "",
             f"{env.get('cpu') or 'CPU'}, {config.threads} threads, {config.image_size}x{config.image_size}, "
             f"untrained weights; medians of {config.rounds} interleaved rounds of {config.duration_s:g} s "
             f"({minutes:.1f} min in all); load average before {env.get('load_avg_before')}, after "
             f"{env.get('load_avg')}; onnxruntime {versions.get('onnxruntime-gpu') or versions.get('onnxruntime')}, "
             f"torch {versions.get('torch')}."]
    if other := [c for r in rows for c in r.other_cores]:
        lines.append(f"Other processes took at most {max(other):.2f} cores (median {statistics.median(other):.2f}) "
                     f"during the {len(other)} measurements (from /proc/stat).")
    flags = [f for r in rows for v in r.disturbed.values() for f in v]
    if flags and all(flags):
        lines.append(f"Every measurement ran while other processes kept more than {DISTURBED_CORES} cores busy: "
                     "these figures are low; rerun on a quiet machine.")
    elif any(flags):
        every = [f"{r.arch} {r.precision} batch {b}" for r in rows for b, v in r.disturbed.items() if all(v)]
        lines.append(f"{sum(flags)} of {len(flags)} measurements ran while other processes kept more than "
                     f"{DISTURBED_CORES} cores busy and were left out of the medians"
                     + (f"; every round was disturbed for {', '.join(every)} (all rounds used)" if every else "") + ".")
    if missing := [f"{r.arch} {r.precision}: {r.note}" for r in rows if r.note]:
        lines.append("Rows without figures: " + "; ".join(missing) + ".")
    return "\n".join(lines)


