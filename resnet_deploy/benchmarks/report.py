"""The benchmark report (docs/measurements.md, "The benchmark report"): its JSON, a check of its schema, and its tables.

Extra keys beyond the documented ones (``wall_s``, latency ``min``/``max``, ``timing``, parity ``count`` and
``reference_kind``, ``parity_not_checked``,
environment ``load_avg`` ...) are additions, never renames: a reader of the documented schema
finds every documented key with its documented type.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.benchmarks.harness import Run

#: the documented keys and their JSON types; "number?" allows null
SCHEMA: dict[str, Any] = {
    "backend": "string", "device": "string", "model": "string", "precision": "string",
    "runs": [{"batch": "integer", "throughput_ips": "number",
              "latency_ms": {"mean": "number", "p50": "number", "p90": "number", "p95": "number", "p99": "number"},
              "gpu_compute_ms": "object?", "iterations": "integer"}],
    "accuracy": {"?": True, "data": "string", "count": "integer", "top1": "number?", "top5": "number?"},
    "parity": {"?": True, "reference": "string", "top1_ref": "number?", "top1_drop": "number?",
               "top1_agreement": "number", "max_abs_diff": "number", "cosine_min": "number"},
    "environment": {"cpu": "string?", "threads": "integer?", "versions": "object"},
}
#: segmentation and backbone reports (``task`` says which): their own accuracy and parity
DENSE_SCHEMA: dict[str, Any] = {
    **{k: v for k, v in SCHEMA.items() if k not in ("accuracy", "parity")},
    "task": "string",
    "accuracy": {"?": True, "data": "string", "count": "integer", "miou": "number?"},
    "parity": {"?": True, "reference": "string", "pixel_agreement": "number?", "miou_ref": "number?",
               "miou_drop": "number?", "outputs": "object", "nonfinite": "integer"},
}


@dataclass
class Report:
    backend: str
    device: str
    model: str
    precision: str
    runs: list[Run]
    environment: dict[str, Any]
    accuracy: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    timing: dict[str, Any] = field(default_factory=dict)  # warmup, duration, inputs, CUDA graph
    int8_target: str | None = None  # an INT8 artifact's quantizer target ("cpu" | "tensorrt"), from its manifest
    parity_not_checked: str | None = None  # with data but no reference: why parity was not checked
    task: str = "classify"  # archs.TASKS: what ``accuracy`` and ``parity`` hold

    def to_dict(self) -> dict[str, Any]:
        out = {"backend": self.backend, "device": self.device, "model": self.model, "precision": self.precision,
               "task": self.task, "runs": [r.to_dict() for r in self.runs], "accuracy": self.accuracy,
               "parity": self.parity, "environment": self.environment, "timing": self.timing}
        if self.parity_not_checked is not None:
            out["parity_not_checked"] = self.parity_not_checked
        return out

    def run_at(self, batch: int) -> Run | None:
        return next((r for r in self.runs if r.batch == batch), None)


def schema_problems(obj: Any, schema: Any = None, where: str = "report") -> list[str]:
    """Where ``obj`` (parsed JSON) departs from the documented report schema; empty when it conforms.

    Without ``schema``: the report's own by its ``task`` (classifiers: ``SCHEMA``, else ``DENSE_SCHEMA``).
    """
    if schema is None:
        dense = isinstance(obj, dict) and obj.get("task", "classify") != "classify"
        schema = DENSE_SCHEMA if dense else SCHEMA
    if isinstance(schema, list):
        if not isinstance(obj, list) or not obj:
            return [f"{where}: expected a non-empty list"]
        return [p for i, item in enumerate(obj) for p in schema_problems(item, schema[0], f"{where}[{i}]")]
    if isinstance(schema, dict):
        if obj is None and schema.get("?"):
            return []
        if not isinstance(obj, dict):
            return [f"{where}: expected an object"]
        return [p for key, sub in schema.items() if key != "?"
                for p in (schema_problems(obj[key], sub, f"{where}.{key}") if key in obj else [f"{where}.{key}: missing"])]
    kind, nullable = schema.rstrip("?"), schema.endswith("?")
    if obj is None:
        return [] if nullable else [f"{where}: null, expected {kind}"]
    ok = {"string": isinstance(obj, str), "object": isinstance(obj, dict),
          "integer": isinstance(obj, int) and not isinstance(obj, bool),
          "number": isinstance(obj, (int, float)) and not isinstance(obj, bool)}[kind]
    return [] if ok else [f"{where}: {type(obj).__name__}, expected {kind}"]


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (publish.write_text)."""
    from resnet_deploy.publish import write_text

    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- tables


def runs_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    """One row per batch size: throughput, latency percentiles, GPU compute where the backend measured it."""
    gpu = any(r.gpu_compute_ms is not None for r in report.runs)
    headers = ["batch", "img/s", "mean ms", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "iters"]
    if gpu:
        headers.insert(7, "gpu p50 ms")
    rows = []
    for run in report.runs:
        d = run.to_dict()
        lat = d["latency_ms"]
        row = [run.batch, d["throughput_ips"], lat["mean"], lat["p50"], lat["p90"], lat["p95"], lat["p99"], run.iterations]
        if gpu:
            row.insert(7, None if d["gpu_compute_ms"] is None else d["gpu_compute_ms"]["p50"])
        rows.append(row)
    return headers, rows


def rank(reports: list[Report]) -> list[Report]:
    """Fastest first, by throughput at the largest batch size they share."""
    common = set.intersection(*({r.batch for r in rep.runs} for rep in reports)) if reports else set()
    if not common:
        return list(reports)
    top = max(common)
    return sorted(reports, key=lambda rep: -rep.run_at(top).throughput_ips)


def compare_rows(reports: list[Report], *, baseline: Report | None = None) -> tuple[list[str], list[list[Any]]]:
    """The ranked side-by-side: throughput per batch, speed-up over ``baseline`` at the largest batch, accuracy."""
    ranked = rank(reports)
    batches = sorted({r.batch for rep in reports for r in rep.runs})
    top = batches[-1]
    headers = ["#", "model", "backend", "precision", *(f"img/s b{b}" for b in batches), f"p50 ms b{top}"]
    if baseline is not None:
        headers.append(f"x {baseline.model}")
    task = reports[0].task if reports else "classify"
    headers += ACCURACY_HEADERS[task]
    rows = []
    for i, rep in enumerate(ranked, 1):
        top_run = rep.run_at(top)
        row: list[Any] = [i, rep.model, rep.backend, rep.precision,
                          *(None if (r := rep.run_at(b)) is None else r.throughput_ips for b in batches),
                          None if top_run is None else top_run.to_dict()["latency_ms"]["p50"]]
        if baseline is not None:
            base = baseline.run_at(top)
            row.append(None if top_run is None or base is None else round(top_run.throughput_ips / base.throughput_ips, 2))
        rows.append(row + accuracy_cells(rep))
    return headers, rows


#: the accuracy and parity columns of each task's tables (``accuracy_cells``)
ACCURACY_HEADERS = {
    "classify": ["top1", "top5", "agree", "drop pts", "max|diff|"],
    "segment": ["mIoU", "pixel agree", "mIoU drop", "max rel diff", "min cos"],
    "backbone": ["max rel diff", "min cos"],
}


def accuracy_cells(rep: Report) -> list[Any]:
    """``rep``'s accuracy and parity under ``ACCURACY_HEADERS[rep.task]``: percent, points, worst output."""
    acc, par = rep.accuracy or {}, rep.parity or {}
    if rep.task == "classify":
        return [_pct(acc.get("top1")), _pct(acc.get("top5")), _pct(par.get("top1_agreement")),
                par.get("top1_drop"), par.get("max_abs_diff")]
    outputs = list((par.get("outputs") or {}).values())
    worst = [max((o["max_rel_diff"] for o in outputs), default=None),
             min((o["cosine_min"] for o in outputs), default=None)]
    if rep.task == "backbone":
        return worst
    return [_pct(acc.get("miou")), _pct(par.get("pixel_agreement")), par.get("miou_drop"), *worst]


#: INT8 must beat the fastest float model by this factor to count as faster (run-to-run noise is a few percent)
INT8_FASTER = 1.10


def disturbed_note(reports: list[Report]) -> str | None:
    """One line when other processes took CPU during timed runs (those figures understate the model), else None.

    The one place that decides it: ``resnet-bench`` and the pipeline print what this returns.
    """
    busy = [f"{rep.model} batch {run.batch}: {run.other_load_cores:.2f} cores"
            for rep in reports for run in rep.runs if run.disturbed]
    if not busy:
        return None
    return (f"other processes were busy during {len(busy)} of {sum(len(r.runs) for r in reports)} runs "
            f"({'; '.join(busy[:4])}{'; ...' if len(busy) > 4 else ''}): those figures are low; rerun on a quiet machine")


def int8_speed_notes(reports: list[Report], *, host=None) -> list[str]:
    """One plain line per onnxruntime-CPU INT8 model that is not faster than the fastest FP32/FP16 one, and why.

    The one place that decides it: ``compare`` and the pipeline print what this returns. Compared
    at the largest batch both ran; ``host`` (a ``cpuinfo.HostCpu``, default this one) says why.
    """
    from resnet_deploy.cpuinfo import host_cpu

    cpu = [r for r in reports if r.backend == "onnxruntime" and r.device == "cpu" and r.runs]
    floats = [r for r in cpu if r.precision in ("fp32", "fp16")]
    notes = []
    for rep in (r for r in cpu if r.precision == "int8"):
        shared = [(f, b) for f in floats for b in sorted({x.batch for x in f.runs} & {x.batch for x in rep.runs})]
        if not shared:
            continue
        top = max(b for _, b in shared)
        best = max((f for f, b in shared if b == top), key=lambda f: f.run_at(top).throughput_ips)
        ratio = rep.run_at(top).throughput_ips / best.run_at(top).throughput_ips
        if ratio >= INT8_FASTER:
            continue
        verdict = "slower than" if ratio < 1.0 else "no faster than"
        notes.append(f"INT8 {rep.model} is {verdict} {best.precision.upper()} {best.model} here ({ratio:.2f}x at "
                     f"batch {top}): {_int8_why(rep.int8_target, host or host_cpu())}")
    return notes


def _int8_why(target: str | None, host) -> str:
    if target == "tensorrt":
        return ("this graph is laid out for TensorRT (symmetric int8 activations); onnxruntime's CPU int8 kernels "
                "want uint8 activations, so build the CPU one (--target cpu)")
    family = host.family
    if family == "x86-64-avx2":
        return ("this CPU has no VNNI, so each pair of uint8 x int8 products costs vpmaddubsw + vpmaddwd + vpaddd "
                "instead of one vpdpbusd, against FP32's FMA kernels")
    if family == "x86-64-sse":
        return "this CPU has no AVX2: onnxruntime's int8 kernels widen every product to 16 bits (SSE)"
    if family == "aarch64-neon":
        return "this CPU has no dot-product instructions (sdot/udot): int8 products go through widening multiplies"
    if family is None:
        return "this CPU's INT8 features could not be read"
    return (f"this CPU has fast INT8 ({family}), so the model itself leaves little to gain: at this size and batch "
            "the Q/DQ and float parts dominate")


def _pct(v: float | None) -> float | None:
    return None if v is None else round(100.0 * v, 2)


def markdown(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub Markdown table; numbers right-aligned, to 3 significant digits (1 decimal from 100 up)."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    numeric = [all(v is None or isinstance(v, (int, float)) for v in (r[i] for r in rows)) for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
