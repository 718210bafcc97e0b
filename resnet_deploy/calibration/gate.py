"""Calibrate for a target, then hold the result to the accuracy gate, keeping sensitive layers in high precision if needed.

1. Quantize every layer the quantizer chooses; measure parity against the reference (PyTorch)
   on the held-out evaluation data; done if the task's gate holds (default: a classifier's top-1
   drop <= 1 point; ``parity.INT8_DENSE_GATES`` for segmentation and backbones, measured image
   by image at each image's own size).
2. Otherwise score each quantized layer's sensitivity on calibration samples, over every output
   of the model (``sensitivity.layer_sensitivity``) and quantize again with the 1, 2, 4, 8, ... most
   sensitive layers excluded (ModelOpt's and onnxruntime's ``nodes_to_exclude``), up to
   ``max_kept``, until the gate holds.
3. If it never holds: GateError naming every attempt; the caller publishes nothing.

The reference runs once: its outputs are recorded on the first evaluation and replayed for the
later attempts (``RecordedSession``).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy.calibration.cache import CalibrationCache, default_cache_dir
from resnet_deploy.calibration.readers import calibration_batch_size
from resnet_deploy.calibration.sensitivity import LayerSensitivity, layer_sensitivity
from resnet_deploy.calibration.targets import TARGETS
from resnet_deploy.calibration.workspace import onnxruntime_log_severity
from resnet_deploy.errors import GateError, UsageError
from resnet_deploy.manifest import package_versions
from resnet_deploy.parity import DenseGate, DenseParity, Gate, Parity, measure_task_parity, task_gate
from resnet_deploy.runtime.session import Session

if TYPE_CHECKING:
    from resnet_deploy.calibration.readers import CalibrationSet
    from resnet_deploy.data import DataSource
    from resnet_deploy.manifest import Manifest


@dataclass(frozen=True)
class Int8Config:
    target: str = "tensorrt"  # "tensorrt": ModelOpt, symmetric Q/DQ where TensorRT fuses it; "cpu": onnxruntime U8S8
    method: str = "entropy"  # "entropy" | "max" | "percentile" (percentile: cpu target only)
    # What stays unquantized (layers left out, the residual Adds' float side, the classifier) runs in
    # FP32. FP16 is faster on GPUs, but an INT8 graph with FP16 scales fails to build on Orin (SM87)
    # with TensorRT 10.16 (NVIDIA/TensorRT#4832); FP32 builds everywhere, TensorRT still runs the
    # quantized layers in INT8, and the CPU accuracy gate measures what it would run.
    high_precision: str = "fp32"
    # cpu target: a ``calibration.cpu.VARIANTS`` name. The default (7-bit weights) is exact on every CPU
    # family; the others are there to be measured (benchmarks/cpu_int8_portability.py), none is faster.
    cpu_variant: str = "u8s8-w7"
    # None: the task's (``parity.INT8_GATE``, ``parity.INT8_DENSE_GATES[task]``); a Gate for classifiers,
    # a DenseGate for segmentation and backbones
    gate: Gate | DenseGate | None = None
    # Layers the fallback may keep in high precision; 0: no fallback. None: half of the quantized layers
    # (beyond that the model is mostly FP32, INT8 buys little, and a missed gate is the honest answer).
    max_kept: int | None = None
    sensitivity_samples: int = 64  # calibration samples the per-layer sensitivity is measured on
    batch_size: int | None = None  # calibration batch; None: by image size, so memory stays bounded
    cache_dir: Path | None = None  # None: <user cache>/calibration
    use_cache: bool = True

    def validate(self) -> None:
        """Raise UsageError for a bad option, before any work."""
        if self.target not in TARGETS:
            raise UsageError(f"`target` must be one of {', '.join(TARGETS)}, got {self.target!r}")
        TARGETS[self.target].check_options(method=self.method, high_precision=self.high_precision)
        from resnet_deploy.calibration.cpu import VARIANTS

        if self.cpu_variant not in VARIANTS:
            raise UsageError(f"`cpu_variant` must be one of {', '.join(VARIANTS)}, got {self.cpu_variant!r}")
        for name in ("max_drop", "max_miou_drop"):
            if (value := getattr(self.gate, name, None)) is not None and value < 0:
                raise UsageError(f"`{name}` must be >= 0, got {value}")
        if self.max_kept is not None and self.max_kept < 0:
            raise UsageError(f"`max_kept` must be >= 0, got {self.max_kept}")
        if self.sensitivity_samples < 1:
            raise UsageError("sensitivity_samples must be at least 1")


@dataclass
class Attempt:
    kept: list[str]
    parity: Parity | DenseParity
    failures: list[str]
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {"kept": len(self.kept), **headline(self.parity), "passed": not self.failures}

    def describe(self) -> str:
        p, h = self.parity, headline(self.parity)
        if isinstance(p, Parity):
            drop = "n/a" if p.top1_drop is None else f"{p.top1_drop:.2f}"
            said = f"top-1 drop {drop} points, agreement {p.top1_agreement:.2%}"
        elif p.pixel_agreement is not None:
            said = f"pixel agreement {p.pixel_agreement:.2%}"
            said += "" if p.miou_drop is None else f", mIoU drop {p.miou_drop:.2f} points"
        else:
            said = f"cosine >= {h['cosine_min']:.4f} (worst output {h['worst_output']})"
        return f"{len(self.kept)} layers kept: {said}"


def headline(p: Parity | DenseParity) -> dict[str, Any]:
    """The figures the task's gate turns on, for a manifest's list of attempts."""
    if isinstance(p, Parity):
        return {"top1_drop": p.top1_drop, "top1_agreement": p.top1_agreement, "max_rel_diff": p.max_rel_diff}
    worst = min(p.outputs, key=lambda name: p.outputs[name]["cosine_min"])
    out: dict[str, Any] = {} if p.pixel_agreement is None else {"pixel_agreement": p.pixel_agreement,
                                                                 "miou_drop": p.miou_drop}
    return {**out, "cosine_min": p.outputs[worst]["cosine_min"], "worst_output": worst,
            "max_rel_diff": max(o["max_rel_diff"] for o in p.outputs.values())}


@dataclass
class GateResult:
    path: Path  # the accepted quantized graph, in the work folder
    parity: Parity | DenseParity
    kept: list[str]  # layers kept in high precision, most sensitive first
    attempts: list[Attempt]
    structure: dict[str, int]  # counts from the placement check
    sensitivity: list[LayerSensitivity] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def quantize_to_gate(parent: Path, parent_sha256: str, manifest: Manifest, cset: CalibrationSet, *,
                     reference: Session, eval_source: DataSource, workdir: Path, config: Int8Config,
                     debug: bool = False, log: Callable[[str], None] | None = None) -> GateResult:
    """Quantize ``parent`` (a private copy in ``workdir``) for ``config.target`` until ``config.gate`` holds."""
    config.validate()
    gate = task_gate(manifest.task, "int8", config.gate)
    say = log or (lambda _msg: None)
    batch = config.batch_size or calibration_batch_size(cset.side)
    cache = CalibrationCache((config.cache_dir or default_cache_dir()) if config.use_cache else None)
    reference = RecordedSession(reference)
    key_parts = {"parent": parent_sha256, "calibration": cset.sha256, "method": config.method, "target": config.target,
                 "batch": batch, "high_precision": config.high_precision,
                 **({"cpu_variant": config.cpu_variant} if config.target == "cpu" else {}), "versions": _quantizer_versions(config.target)}
    attempts: list[Attempt] = []
    seconds = {"calibrate_s": 0.0, "parity_s": 0.0}

    def attempt(kept: list[str]) -> tuple[Attempt, Path, dict[str, int]]:
        path = workdir / f"int8-{len(attempts)}.onnx"
        t0 = time.perf_counter()
        cached, structure = _quantized(parent, cset, manifest, path, kept=kept, batch=batch, config=config,
                                       cache=cache, key=cache.key("model", kept=sorted(kept), **key_parts), debug=debug)
        seconds["calibrate_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        parity = _evaluate(reference, path, manifest, eval_source, target=config.target, debug=debug)
        seconds["parity_s"] += time.perf_counter() - t0
        result = Attempt(kept, parity, parity.failures(gate), cached)  # type: ignore[arg-type]  # the gate fits the parity
        attempts.append(result)
        say(f"INT8 ({config.target}{', cached' if cached else ''}), {result.describe()}"
            f"{'; gate holds' if not result.failures else ''}")
        return result, path, structure

    say(f"calibrating for {config.target} ({config.method}, {cset.count} samples, batch {batch})")
    first, path, structure = attempt([])
    if not first.failures:
        return GateResult(path, first.parity, [], attempts, structure, seconds=seconds)
    if config.max_kept == 0:
        raise _gate_error(attempts, config, "the fallback is off (`max_kept` 0)")
    t0 = time.perf_counter()
    ranking = _sensitivity(parent, path, cset, manifest, config, cache, key_parts, say)
    seconds["sensitivity_s"] = time.perf_counter() - t0
    limit = len(ranking) // 2 if config.max_kept is None else min(config.max_kept, len(ranking))
    for k in _schedule(limit):
        kept = [s.node for s in ranking[:k]]
        result, path, structure = attempt(kept)
        if not result.failures:
            return GateResult(path, result.parity, kept, attempts, structure, ranking, seconds)
    raise _gate_error(attempts, config, f"kept up to {limit} of {len(ranking)} quantized layers in {config.high_precision}")


def _schedule(limit: int) -> list[int]:
    """1, 2, 4, ... below ``limit``, then ``limit``: few re-quantizations, and the last try keeps all allowed."""
    out, k = [], 1
    while k < limit:
        out.append(k)
        k *= 2
    return out + [limit] if limit >= 1 else out


def _gate_error(attempts: list[Attempt], config: Int8Config, why: str) -> GateError:
    tried = "; ".join(a.describe() for a in attempts)
    return GateError(f"INT8 ({config.target}) missed the accuracy gate ({'; '.join(attempts[-1].failures)}) on "
                     f"{attempts[-1].parity.data}; {why}. Tried: {tried}. Nothing was published")


def _quantized(parent: Path, cset: CalibrationSet, manifest: Manifest, path: Path, *, kept: list[str], batch: int,
               config: Int8Config, cache: CalibrationCache, key: str, debug: bool) -> tuple[bool, dict[str, int]]:
    """Write the quantized graph to ``path`` (from the cache when model, data and method match); check it."""
    import onnx

    if cache.fetch_model(key, path):
        try:
            return True, _check(onnx.load(str(path)), config, kept, manifest)
        except Exception:  # protobuf's DecodeError, OSError, or DeployError from the check: calibrate again
            path.unlink(missing_ok=True)
    reader = cset.reader(manifest, batch_size=batch)
    TARGETS[config.target].quantize(parent, reader, path, method=config.method, exclude=kept,
                                    high_precision=config.high_precision, variant=_variant(config), debug=debug)
    structure = _check(onnx.load(str(path)), config, kept, manifest)
    cache.store_model(key, path)
    return False, structure


def _check(model, config: Int8Config, kept: list[str], manifest: Manifest) -> dict[str, int]:
    return TARGETS[config.target].check(model, excluded=kept, variant=_variant(config),
                                        float_outputs=manifest.task != "backbone")


def _variant(config: Int8Config) -> str | None:
    """The target-specific form to quantize to: the cpu variant; the tensorrt target has one form."""
    return config.cpu_variant if config.target == "cpu" else None


def _evaluate(reference: Session, path: Path, manifest: Manifest, source: DataSource, *, target: str,
              debug: bool) -> Parity | DenseParity:
    """Parity of the quantized graph in onnxruntime on the CPU.

    The cpu target runs as deployed (ORT's optimized int8 kernels). The tensorrt target's graph is
    run as written, Q/DQ simulated in float: onnxruntime only stands in for TensorRT here, and its
    1.24 CPU optimizer miscomputes graphs with FP16 scales (28% top-1 agreement on the demo
    model, 98% unoptimized).
    """
    from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

    with contextlib.ExitStack() as stack:
        if not debug:
            stack.enter_context(onnxruntime_log_severity(3))  # no per-node constant-folding warnings
        candidate = stack.enter_context(OnnxRuntimeSession(path, manifest=manifest, provider="cpu",
                                                           optimize=target == "cpu"))
        return measure_task_parity(reference, candidate, source, manifest, batch_size=min(32, manifest.batch.max))


def _sensitivity(parent: Path, quantized: Path, cset: CalibrationSet, manifest: Manifest, config: Int8Config,
                 cache: CalibrationCache, key_parts: dict[str, Any], say: Callable[[str], None]) -> list[LayerSensitivity]:
    key = cache.key("sensitivity", samples=config.sensitivity_samples, **key_parts)
    if (record := cache.fetch_record(key)) is not None:
        try:
            return [LayerSensitivity(**item) for item in record]
        except TypeError:
            cache.forget(key)
    samples = min(config.sensitivity_samples, cset.count)
    say(f"measuring the INT8 sensitivity of each layer on {samples} calibration samples")
    ranking = layer_sensitivity(parent, quantized, cset, manifest, samples=samples,
                                batch_size=min(16, manifest.batch.max))
    cache.store_record(key, [s.to_dict() for s in ranking])
    return ranking


def _quantizer_versions(target: str) -> dict[str, str]:
    return package_versions(*TARGETS[target].packages)


#: the most bytes of reference outputs ``RecordedSession`` keeps; beyond it the reference runs again. Logits
#: are small; a backbone's c2 at 520x693 is 23 MB per image in float32, and a set of such images would not fit.
RECORDED_BYTES = 1 << 30


class RecordedSession(Session):
    """A reference whose outputs are computed once per distinct batch and replayed after (keyed by the batch's
    shape and bytes): ``run`` and ``run_outputs`` both replay ``inner.run_outputs``, every output of the model,
    as far as ``RECORDED_BYTES`` holds them."""

    def __init__(self, inner: Session) -> None:
        self.inner = inner
        for name in ("backend", "manifest", "input_name", "input_dtype", "sample_shape", "min_batch", "max_batch",
                     "output_names", "size_range"):
            setattr(self, name, getattr(inner, name))
        self._outputs: dict[str, dict[str, np.ndarray]] = {}
        self._bytes = 0

    @property
    def description(self) -> str:
        return self.inner.description

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._run_outputs(batch)[self.output_names[0]]

    def _run_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        h = hashlib.sha256(f"{batch.dtype}{batch.shape}".encode())
        h.update(memoryview(batch).cast("B"))
        if (key := h.hexdigest()) in self._outputs:
            return self._outputs[key]
        outputs = self.inner.run_outputs(batch)
        size = sum(a.nbytes for a in outputs.values())
        if self._bytes + size <= RECORDED_BYTES:
            self._outputs[key] = outputs
            self._bytes += size
        return outputs

    def close(self) -> None:
        self.inner.close()
