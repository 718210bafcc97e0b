"""Benchmark one model or several: accuracy and parity first (gates fail fast), then timing per batch size.

Parity runs before timing so a model that misses its gate costs no benchmark time and writes no
report. Every model sees the same data and the same batch sizes; timing inputs are seeded random
data of the model's input shape, or the first batch of ``--data`` repeated.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ContextManager


from resnet_deploy.benchmarks.environment import environment
from resnet_deploy.benchmarks.harness import BenchConfig, Run, data_input, random_input, time_session
from resnet_deploy.benchmarks.report import Report
from resnet_deploy.errors import GateError, UsageError
from resnet_deploy.benchmarks.specs import RecordedRef
from resnet_deploy.parity import DenseGate, Gate, measure_dense_parity, measure_parity, measure_recorded_parity, topk_hits

if TYPE_CHECKING:
    from resnet_deploy.benchmarks.specs import Opened
    from resnet_deploy.data import DataSource
    from resnet_deploy.manifest import Preprocess
    from resnet_deploy.runtime.session import Session

#: ``progress(label)`` -> a context manager yielding ``update(fraction_done)``
ProgressFactory = Callable[[str], ContextManager[Callable[[float], None]]]
PARITY_BATCH = 32


@contextlib.contextmanager
def _no_progress(label: str) -> Iterator[Callable[[float], None]]:  # noqa: ARG001
    yield lambda fraction: None


def check_batches(opened: Opened, batches: tuple[int, ...]) -> None:
    """Every batch size inside the model's range, before any work."""
    s = opened.session
    bad = [b for b in batches if b < s.min_batch or (s.max_batch is not None and b > s.max_batch)]
    if bad:
        raise UsageError(f"{opened.label}: batch {', '.join(map(str, bad))} outside its range {s.min_batch}..{s.max_batch}")


def check_gate(gate: Gate, *, source: DataSource | None, has_reference: bool) -> None:
    if gate.min_agreement is None and gate.max_drop is None:
        return
    if source is None:
        raise UsageError("`max_drop`/`min_agreement` need `data` to measure on")
    if not has_reference:
        raise UsageError("`max_drop`/`min_agreement` need a `reference`, or an artifact with a manifest")


def parity_batch(session: Session) -> int:
    return max(session.min_batch, min(PARITY_BATCH, session.max_batch or PARITY_BATCH))


def measure_accuracy(session: Session, source: DataSource, pp: Preprocess, *, batch_size: int = PARITY_BATCH) -> dict[str, Any]:
    """Top-1/top-5 of ``session`` on ``source`` (None where it is unlabelled), streamed."""
    n = labelled = hit1 = hit5 = 0
    for batch in source.batches(pp, batch_size=batch_size):
        logits = session.run(batch.as_input(session.input_dtype, pp))
        n += len(logits)
        if batch.labels is not None and (batch.labels >= 0).all():
            one, five = topk_hits(logits, batch.labels)
            labelled += len(logits)
            hit1 += one
            hit5 += five
    if n == 0:
        raise UsageError(f"{source.description}: no decodable samples")
    return {"data": source.description, "count": n, "top1": hit1 / labelled if labelled else None,
            "top5": hit5 / labelled if labelled else None}


def check_same_classes(opened: Opened, reference: Opened, source: DataSource) -> None:
    """Both models answer with the same number of classes (one sample), or a clear error before the real run."""
    pp = opened.preprocess
    batch = next(iter(source.batches(pp, batch_size=max(1, opened.session.min_batch, reference.session.min_batch))))
    n_out = opened.session.run(batch.as_input(opened.session.input_dtype, pp)).shape[1]
    n_ref = reference.session.run(batch.as_input(reference.session.input_dtype, pp)).shape[1]
    if n_out != n_ref:
        raise UsageError(f"{opened.label} outputs {n_out} classes but its reference {reference.label} {n_ref}: "
                         "not the same model (pass a `reference`, or `num_classes` for a checkpoint)")


def measure(opened: Opened, *, source: DataSource, reference: Opened | RecordedRef | None,
            gate: Gate = Gate()) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(accuracy, parity) of ``opened`` on ``source``; GateError when ``gate`` is missed.

    The parity says which reference it was measured against: ``reference`` (its label) and
    ``reference_kind`` ("torch", "recorded", "onnx", "trt").
    """
    session, pp = opened.session, opened.preprocess
    if opened.task != "classify":
        return measure_dense(opened, source=source, reference=reference, gate=gate)
    source.for_model(opened.manifest or (reference.manifest if reference is not None else None))
    if reference is None:
        return measure_accuracy(session, source, pp, batch_size=parity_batch(session)), None
    if isinstance(reference, RecordedRef):
        kind = "recorded"
        par = measure_recorded_parity(reference.recorded, session, source, pp, batch_size=parity_batch(session))
    else:
        kind = reference.spec.kind
        size = min(parity_batch(session), parity_batch(reference.session))
        check_same_classes(opened, reference, source)
        par = measure_parity(reference.session, session, source, pp, batch_size=size)
    par.check(gate, what=opened.label)
    accuracy = {"data": par.data, "count": par.count, "top1": par.top1, "top5": par.top5}
    parity = {"reference": reference.label, "reference_kind": kind,
              **{k: v for k, v in par.to_dict().items() if k != "data"}}
    return accuracy, parity


def dense_gate(task: str, gate: Gate) -> DenseGate:
    """The options ``max_drop``/``min_agreement`` for a dense ``task``: a segmenter's mIoU drop (points, on the
    data's masks) and pixel agreement; a backbone has neither (its parity is per output)."""
    if task == "backbone" and (gate.max_drop is not None or gate.min_agreement is not None):
        raise UsageError("`max_drop`/`min_agreement` gate classifiers and segmentation; a backbone's parity is its "
                         "outputs' cosine and relative difference (in the report)")
    return DenseGate(min_agreement=gate.min_agreement, max_miou_drop=gate.max_drop)


def measure_dense(opened: Opened, *, source: DataSource, reference: Opened | RecordedRef | None,
                  gate: Gate = Gate()) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(accuracy, parity) of a segmentation or backbone model: image by image at each image's own aspect.

    Accuracy is the mIoU on the data's masks (segment; None without masks); parity the pixel
    agreement, the mIoU drop and, per output, the max abs/relative difference and the smallest cosine.
    """
    checked = dense_gate(opened.task, gate)
    if checked.max_miou_drop is not None and not source.has_masks:
        raise UsageError(f"{source.description}: has no masks; the mIoU drop gate (`max_drop`) measures on label maps "
                         "(use `min_agreement` for pixel agreement)")
    if isinstance(reference, RecordedRef):
        raise UsageError(f"{opened.label}: a recorded reference holds a classifier's answers; compare a {opened.task} "
                         "model with the PyTorch model (`reference` torch) or another artifact")
    segment = opened.task == "segment"
    source.for_model(opened.manifest)
    if reference is not None and reference.task != opened.task:
        raise UsageError(f"{opened.label} is a {opened.task} model but its reference {reference.label} a "
                         f"{reference.task} model: not the same model")
    par = measure_dense_parity(None if reference is None else reference.session, opened.session, source,
                               opened.preprocess, segment=segment)
    accuracy = {"data": par.data, "count": par.count, "miou": par.miou}
    if reference is None:
        return accuracy, None
    par.check(checked, what=opened.label)
    parity = {"reference": reference.label, "reference_kind": reference.spec.kind,
              **{k: v for k, v in par.to_dict().items() if k != "data"}}
    return accuracy, parity


def time_batches(opened: Opened, *, config: BenchConfig, source: DataSource | None = None,
                 progress: ProgressFactory = _no_progress) -> list[Run]:
    """One Run per batch size in ``config.batches``."""
    runs = []
    dense_resize = opened.preprocess.resize if opened.task != "classify" else None
    for b in config.batches:
        x = (random_input(opened.session, b, dense_resize=dense_resize) if source is None
             else data_input(opened.session, source, opened.preprocess, b))
        with progress(f"{opened.label} batch {b}") as update:
            runs.append(time_session(opened.session, x, config=config, progress=update))
    return runs


def timing_info(opened: Opened, config: BenchConfig, source: DataSource | None, *, cuda_graph: bool) -> dict[str, Any]:
    inputs = (f"random {opened.session.input_dtype}, seed 0" if source is None
              else f"first batch of {source.description}, repeated")
    mode = "host wall time per call" + ("" if opened.device == "cpu" else ", host<->device copies included")
    return {"warmup_s": config.warmup_s, "duration_s": None if config.iterations else config.duration_s,
            "iterations": config.iterations, "min_iterations": config.min_iterations, "inputs": inputs,
            "latency": mode, "cuda_graph": cuda_graph, "session": opened.session.description}


def benchmark(opened: Opened, *, config: BenchConfig = BenchConfig(), source: DataSource | None = None,
              reference: Opened | RecordedRef | None = None, gate: Gate = Gate(), threads: int | None = None,
              cuda_graph: bool = False, progress: ProgressFactory = _no_progress,
              no_parity: str | None = None) -> Report:
    """Accuracy and parity on ``source`` (gated), then timing at each batch size: one report.

    ``no_parity``: why there is no ``reference`` (the report says parity was not checked, and why).
    """
    check_batches(opened, config.batches)
    check_gate(gate, source=source, has_reference=reference is not None)
    accuracy = parity = None
    if source is not None:
        accuracy, parity = measure(opened, source=source, reference=reference, gate=gate)
    runs = time_batches(opened, config=config, source=source, progress=progress)
    return Report(backend=opened.session.backend, device=opened.device, model=opened.label, precision=opened.precision,
                  runs=runs, environment=environment(threads=threads), accuracy=accuracy, parity=parity,
                  timing=timing_info(opened, config, source, cuda_graph=cuda_graph), int8_target=int8_target(opened),
                  parity_not_checked=no_parity if source is not None and parity is None else None, task=opened.task)


def compare(models: list[Opened], *, references: list[Opened | RecordedRef | None], config: BenchConfig = BenchConfig(),
            source: DataSource | None = None, gate: Gate = Gate(), threads: int | None = None,
            cuda_graph: bool = False, progress: ProgressFactory = _no_progress) -> list[Report]:
    """Benchmark ``models`` on the same data and batch sizes. Every gate is checked before any timing;
    all misses are reported together."""
    if len({m.task for m in models}) > 1:
        raise UsageError("compare models of one task: " + ", ".join(f"{m.label} ({m.task})" for m in models))
    for opened, ref in zip(models, references, strict=True):
        check_batches(opened, config.batches)
        check_gate(gate, source=source, has_reference=ref is not None)
    measured: list[tuple[dict | None, dict | None]] = []
    misses = []
    for opened, ref in zip(models, references, strict=True):
        if source is None:
            measured.append((None, None))
            continue
        try:
            measured.append(measure(opened, source=source, reference=ref, gate=gate))
        except GateError as exc:
            misses.append(str(exc))
    if misses:
        raise GateError(" | ".join(misses))
    env = environment(threads=threads)
    runs: list[list[Run]] = [[] for _ in models]
    for b in config.batches:  # batch-major: a burst of load elsewhere hits one batch of every model alike
        one = dataclasses.replace(config, batches=(b,))
        for i, opened in enumerate(models):
            runs[i] += time_batches(opened, config=one, source=source, progress=progress)
    return [Report(backend=opened.session.backend, device=opened.device, model=opened.label, precision=opened.precision,
                   runs=model_runs, environment=env, accuracy=accuracy, parity=parity,
                   timing=timing_info(opened, config, source, cuda_graph=cuda_graph), int8_target=int8_target(opened),
                   task=opened.task)
            for opened, model_runs, (accuracy, parity) in zip(models, runs, measured)]


def int8_target(opened: Opened) -> str | None:
    """The quantizer target ("cpu" | "tensorrt") an INT8 artifact's manifest records; None otherwise."""
    m = opened.manifest
    return (m.details or {}).get("target") if m is not None and m.precision == "int8" else None
