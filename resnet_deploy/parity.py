"""Parity between a candidate artifact and its reference, streamed over a data source, and the gates.

Both sessions see the same preprocessed images. Figures: top-1/top-5 of each (where labelled),
top-1 drop in points, top-1 agreement, max abs logit difference (absolute and relative to the
reference's largest logit) and the smallest per-sample cosine similarity. NaN or Inf in any
output makes the comparison fail, never pass (docs/reliability.md, promise 4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy.errors import GateError, UsageError
from resnet_deploy.recorded import ranking

if TYPE_CHECKING:
    from resnet_deploy.data import DataSource
    from resnet_deploy.manifest import Manifest, Preprocess
    from resnet_deploy.recorded import RecordedReference
    from resnet_deploy.runtime.session import Session


@dataclass(frozen=True)
class Gate:
    """Pass conditions against the reference; None disables a condition."""

    min_agreement: float | None = None  # fraction of samples whose top-1 class matches the reference
    max_drop: float | None = None  # top-1 accuracy drop, percentage points (needs labels)
    max_rel_diff: float | None = None  # max abs logit diff / max abs reference logit


# The gates per artifact (docs/user-guide.md): FP32 exact, FP16 near-exact, INT8 within a point.
FP32_GATE = Gate(min_agreement=1.0, max_rel_diff=1e-3)
FP16_GATE = Gate(min_agreement=0.995, max_drop=0.2)
INT8_GATE = Gate(max_drop=1.0)


class _Measured:
    """What every parity shares: ``data`` (what it was measured on), ``failures`` against a gate, and the check."""

    data: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass

    def failures(self, gate: Any) -> list[str]:
        raise NotImplementedError

    def check(self, gate: Any, *, what: str) -> None:
        """Raise GateError (exit 1) naming every missed condition."""
        if problems := self.failures(gate):
            raise GateError(f"{what} failed its accuracy gate on {self.data}: {'; '.join(problems)}")


@dataclass
class Parity(_Measured):
    data: str
    count: int
    top1_ref: float | None
    top1: float | None
    top5_ref: float | None
    top5: float | None
    top1_drop: float | None  # points
    top1_agreement: float
    max_abs_diff: float
    max_rel_diff: float
    cosine_min: float
    nonfinite: int  # outputs with NaN/Inf, candidate or reference

    def failures(self, gate: Gate) -> list[str]:
        """What ``gate`` finds wrong; empty when it passes."""
        out = []
        if self.nonfinite:
            out.append(f"{self.nonfinite} outputs contain NaN or Inf")
        if gate.min_agreement is not None and not self.top1_agreement >= gate.min_agreement:
            out.append(f"top-1 agreement {self.top1_agreement:.2%} < {gate.min_agreement:.2%}")
        if gate.max_drop is not None:
            if self.top1_drop is None:
                out.append("top-1 drop gate needs labelled data")
            elif not self.top1_drop <= gate.max_drop:
                out.append(f"top-1 drop {self.top1_drop:.2f} points > {gate.max_drop:.2f}")
        if gate.max_rel_diff is not None and not self.max_rel_diff <= gate.max_rel_diff:
            out.append(f"max abs logit diff {self.max_abs_diff:.3g} is {self.max_rel_diff:.2e} of the largest logit "
                       f"(limit {gate.max_rel_diff:.0e})")
        return out


def topk_hits(logits: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """How many rows of ``logits`` rank their label first, and within the top five."""
    return ranked_hits(ranking(logits), labels)


def ranked_hits(top: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """How many rows of ``top`` (classes best first) have their label first, and within the first five."""
    top = top[:, :5]
    return int((top[:, 0] == labels).sum()), int((top == labels[:, None]).any(axis=1).sum())


class ParityAccumulator:
    """Streams (reference, candidate, labels) batches into a ``Parity``; O(1) memory in the set size.

    ``update`` takes the reference's logits; ``update_ranked`` what a recorded reference keeps: its
    classes ranked (every sample) and the full logits of the first rows only. Agreement and top-k
    cover every sample, the logit figures the rows with logits.
    """

    def __init__(self, data: str) -> None:
        self.data = data
        self.n = self.labelled = self.agree = self.nonfinite = 0
        self.hits = {"top1_ref": 0, "top1": 0, "top5_ref": 0, "top5": 0}
        self.max_abs = self.max_ref = 0.0
        self.cos_min = 1.0

    def update(self, ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None = None) -> None:
        self.update_ranked(ranking(ref), out, labels, ref_logits=ref)

    def update_ranked(self, ref_top: np.ndarray, out: np.ndarray, labels: np.ndarray | None = None, *,
                      ref_logits: np.ndarray | None = None) -> None:
        """``ref_top``: (n, k) the reference's classes best first; ``ref_logits``: the full logits of the first rows."""
        out = out.astype(np.float64)
        m = 0 if ref_logits is None else len(ref_logits)
        ref = None if ref_logits is None else ref_logits.astype(np.float64)
        bad = ~np.isfinite(out).all(axis=1)
        if ref is not None:
            bad[:m] |= ~np.isfinite(ref).all(axis=1)
        self.nonfinite += int(bad.sum())
        self.n += len(out)
        self.agree += int(((ref_top[:, 0] == out.argmax(axis=1)) & ~bad).sum())
        good = ~bad[:m]
        if ref is not None and good.any():
            r, o = ref[good], out[:m][good]
            self.max_abs = max(self.max_abs, float(np.abs(r - o).max()))
            self.max_ref = max(self.max_ref, float(np.abs(r).max()))
            denom = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
            cos = np.where(denom > 0, (r * o).sum(axis=1) / np.maximum(denom, 1e-300), 1.0)
            self.cos_min = min(self.cos_min, float(cos.min()))
        if labels is not None and (labels >= 0).all():
            self.labelled += len(labels)
            for suffix, top in (("_ref", ref_top), ("", ranking(out))):
                hit1, hit5 = ranked_hits(top, labels)
                self.hits["top1" + suffix] += hit1
                self.hits["top5" + suffix] += hit5

    def result(self) -> Parity:
        acc = {k: (v / self.labelled if self.labelled else None) for k, v in self.hits.items()}
        drop = None if acc["top1"] is None else round(100.0 * (acc["top1_ref"] - acc["top1"]), 6)
        return Parity(
            data=self.data, count=self.n, top1_ref=acc["top1_ref"], top1=acc["top1"], top5_ref=acc["top5_ref"],
            top5=acc["top5"], top1_drop=drop, top1_agreement=self.agree / self.n if self.n else 0.0,
            max_abs_diff=self.max_abs, max_rel_diff=self.max_abs / self.max_ref if self.max_ref else float(self.max_abs > 0),
            cosine_min=self.cos_min, nonfinite=self.nonfinite,
        )


def measure_parity(reference: Session, candidate: Session, source: DataSource, pp: Preprocess, *,
                   batch_size: int = 32,
                   record: Callable[[np.ndarray, np.ndarray | None], None] | None = None) -> Parity:
    """Run both sessions over ``source`` (each fed in its own input format) and compare their logits.

    ``record(reference_logits, labels)`` sees every batch (the export keeps them: ``recorded.py``).
    """
    acc = ParityAccumulator(source.description)
    for batch in source.batches(pp, batch_size=batch_size):
        ref = reference.run(batch.as_input(reference.input_dtype, pp))
        out = candidate.run(batch.as_input(candidate.input_dtype, pp))
        acc.update(ref, out, batch.labels)
        if record is not None:
            record(ref, batch.labels)
    acc.data = source.description  # after the pass: images that did not decode are not counted
    if acc.n == 0:
        raise GateError(f"{source.description}: no decodable samples to measure parity on")
    return acc.result()


# ----------------------------------------------------------------------------- dense tasks


@dataclass(frozen=True)
class DenseGate:
    """Pass conditions for segmentation and backbones against the reference; None disables a condition."""

    min_agreement: float | None = None  # fraction of pixels whose argmax class matches (segment)
    max_rel_diff: float | None = None  # per output: max abs diff / max abs reference value
    min_cosine: float | None = None  # per output: the smallest per-sample cosine similarity
    # segment: mIoU drop in points against the reference, measured on the data's masks (255: ignore);
    # where the data has no masks the gate asks for ``min_agreement_unmasked`` instead
    max_miou_drop: float | None = None
    min_agreement_unmasked: float | None = None


# FP32 per task (docs/tasks.md): segmentation by argmax pixel agreement and scores, backbones per output.
FP32_DENSE_GATES = {
    "segment": DenseGate(min_agreement=0.9999, max_rel_diff=1e-3),
    "backbone": DenseGate(max_rel_diff=1e-3, min_cosine=0.9999),
}
# FP16 and INT8 per task (issue 16): FP16 near-exact; INT8 within a point of mIoU where masks exist.
FP16_DENSE_GATES = {
    "segment": DenseGate(min_agreement=0.995),
    "backbone": DenseGate(min_cosine=0.999),
}
INT8_DENSE_GATES = {
    "segment": DenseGate(max_miou_drop=1.0, min_agreement_unmasked=0.98),
    "backbone": DenseGate(min_cosine=0.98),
}


@dataclass
class DenseParity(_Measured):
    data: str
    count: int  # images
    pixels: int  # pixels compared for agreement (segment), else 0
    pixel_agreement: float | None  # segment only
    outputs: dict[str, dict[str, float]]  # name -> max_abs_diff, max_rel_diff, cosine_min
    nonfinite: int  # samples with NaN/Inf in any output, candidate or reference
    # segment on data with masks (255: ignore), else None: mean IoU (a fraction) over the classes with a
    # non-empty union (``mean_iou``), of the reference and of the candidate, and the drop in points
    miou_ref: float | None = None
    miou: float | None = None
    miou_drop: float | None = None

    def failures(self, gate: DenseGate) -> list[str]:
        out = []
        if self.nonfinite:
            out.append(f"{self.nonfinite} samples have NaN or Inf outputs")
        if gate.min_agreement is not None and not (self.pixel_agreement or 0.0) >= gate.min_agreement:
            out.append(f"pixel agreement {self.pixel_agreement or 0.0:.4%} < {gate.min_agreement:.4%}")
        if gate.max_miou_drop is not None and self.miou_drop is not None:
            if not self.miou_drop <= gate.max_miou_drop:
                out.append(f"mIoU drop {self.miou_drop:.2f} points > {gate.max_miou_drop:.2f}")
        elif gate.max_miou_drop is not None and gate.min_agreement_unmasked is None:
            out.append("the mIoU gate needs data with masks")
        if (gate.min_agreement_unmasked is not None and self.miou_drop is None
                and not (self.pixel_agreement or 0.0) >= gate.min_agreement_unmasked):
            out.append(f"pixel agreement {self.pixel_agreement or 0.0:.4%} < {gate.min_agreement_unmasked:.4%} "
                       "(no masks, so agreement stands in for the mIoU drop)")
        for name, o in self.outputs.items():
            if gate.max_rel_diff is not None and not o["max_rel_diff"] <= gate.max_rel_diff:
                out.append(f"{name}: max abs diff {o['max_abs_diff']:.3g} is {o['max_rel_diff']:.2e} of the largest "
                           f"value (limit {gate.max_rel_diff:.0e})")
            if gate.min_cosine is not None and not o["cosine_min"] >= gate.min_cosine:
                out.append(f"{name}: cosine {o['cosine_min']:.6f} < {gate.min_cosine}")
        return out


class DenseParityAccumulator:
    """Streams named outputs of reference and candidate into a ``DenseParity``; ``segment`` adds pixel agreement,
    and, for samples given a label map, the confusion matrices of both against it (their mIoU).

    mIoU is Pascal VOC's: per class, IoU = true positives / (true positives + false positives +
    false negatives) over every scored pixel of the data (255 never scored), averaged over the
    classes whose union is not empty (present in the masks or predicted).
    """

    def __init__(self, data: str, names: tuple[str, ...], *, segment: bool) -> None:
        self.data, self.names, self.segment = data, names, segment
        self.n = self.pixels = self.agree = self.nonfinite = 0
        self.stats = {name: {"max_abs": 0.0, "max_ref": 0.0, "cos_min": 1.0} for name in names}
        self.confusion: dict[str, np.ndarray] = {}  # "ref"/"out" -> (classes, classes): rows truth, columns predicted

    def update(self, ref: dict[str, np.ndarray], out: dict[str, np.ndarray],
               masks: Sequence[np.ndarray | None] | None = None) -> None:
        """``masks``: per sample, None or a uint8 label map at the scores' height and width (255: ignored)."""
        n = len(ref[self.names[0]])
        bad = np.zeros(n, dtype=bool)
        for name in self.names:
            for a in (ref[name], out[name]):
                bad |= ~np.isfinite(a.reshape(n, -1)).all(axis=1)
        self.n += n
        self.nonfinite += int(bad.sum())
        if bad.all():
            return
        for name in self.names:
            r = ref[name][~bad].astype(np.float64).reshape(int((~bad).sum()), -1)
            o = out[name][~bad].astype(np.float64).reshape(r.shape)
            s = self.stats[name]
            s["max_abs"] = max(s["max_abs"], float(np.abs(r - o).max()))
            s["max_ref"] = max(s["max_ref"], float(np.abs(r).max()))
            denom = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
            cos = np.where(denom > 0, (r * o).sum(axis=1) / np.maximum(denom, 1e-300), 1.0)
            s["cos_min"] = min(s["cos_min"], float(cos.min()))
        if self.segment:
            r, o = ref[self.names[0]].argmax(axis=1), out[self.names[0]].argmax(axis=1)
            self.pixels += r[~bad].size
            self.agree += int((r[~bad] == o[~bad]).sum())
            for i, mask in enumerate(masks or ()):
                if mask is not None and not bad[i]:
                    self._score(mask, {"ref": r[i], "out": o[i]}, ref[self.names[0]].shape[1])

    def _score(self, mask: np.ndarray, maps: dict[str, np.ndarray], classes: int) -> None:
        from resnet_deploy.data import IGNORE

        if mask.shape != maps["ref"].shape:
            raise UsageError(f"{self.data}: a mask is {mask.shape[0]}x{mask.shape[1]}, the scores "
                             f"{maps['ref'].shape[0]}x{maps['ref'].shape[1]}")
        keep = mask != IGNORE
        truth = mask[keep].astype(np.int64)
        if truth.size and int(truth.max()) >= classes:
            raise UsageError(f"{self.data}: a mask holds class {int(truth.max())}, the model has {classes} classes "
                             f"(0..{classes - 1}, and {IGNORE} for ignored pixels)")
        for who, pred in maps.items():
            counts = np.bincount(truth * classes + pred[keep], minlength=classes * classes)
            self.confusion[who] = self.confusion.get(who, 0) + counts.reshape(classes, classes)

    def result(self) -> DenseParity:
        outputs = {}
        for name, s in self.stats.items():
            rel = s["max_abs"] / s["max_ref"] if s["max_ref"] else float(s["max_abs"] > 0)
            outputs[name] = {"max_abs_diff": s["max_abs"], "max_rel_diff": rel, "cosine_min": s["cos_min"]}
        agreement = (self.agree / self.pixels if self.pixels else 0.0) if self.segment else None
        miou_ref, miou = (mean_iou(self.confusion[w]) if w in self.confusion else None for w in ("ref", "out"))
        drop = None if miou_ref is None or miou is None else round(100.0 * (miou_ref - miou), 6)
        return DenseParity(self.data, self.n, self.pixels, agreement, outputs, self.nonfinite,
                           miou_ref=miou_ref, miou=miou, miou_drop=drop)


def mean_iou(confusion: np.ndarray) -> float | None:
    """Mean IoU of a confusion matrix (rows truth, columns predicted) over the classes with a non-empty union."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else None


def measure_dense_parity(reference: Session | None, candidate: Session, source: DataSource, pp: Preprocess, *,
                         segment: bool) -> DenseParity:
    """Both sessions on each image of ``source`` at its own aspect (short side ``pp.resize``, uncropped).

    Where the source has masks (segment), each is resized to the scores' size with nearest-neighbour
    sampling (as torchvision's segmentation reference evaluates) and scored into both mIoUs.
    ``reference`` None: the candidate alone (its mIoU; the parity figures are then trivially exact).
    """
    from resnet_deploy.data import dense_image, mask_at

    acc = DenseParityAccumulator(source.description, candidate.output_names, segment=segment)
    for frame, mask in source.masked_frames():
        batch = dense_image(frame, pp)
        out = candidate.run_outputs(batch.as_input(candidate.input_dtype, pp))
        ref = out if reference is None else reference.run_outputs(batch.as_input(reference.input_dtype, pp))
        masks = None
        if segment and mask is not None:
            if mask.shape != frame.shape[:2]:
                raise UsageError(f"{source.description}: a mask is {mask.shape[1]}x{mask.shape[0]}, its image "
                                 f"{frame.shape[1]}x{frame.shape[0]}")
            masks = [mask_at(mask, batch.images.shape[1:3])]
        acc.update(ref, out, masks)
    if acc.n == 0:
        raise GateError(f"{source.description}: no decodable samples to measure parity on")
    return acc.result()


def measure_recorded_parity(recorded: RecordedReference, candidate: Session, source: DataSource, pp: Preprocess, *,
                            batch_size: int = 32) -> Parity:
    """Compare ``candidate`` on ``source`` with the reference recorded on that same data (its digest)."""
    if source.digest() != recorded.data_digest:
        raise UsageError(f"{source.description}: not the data the recorded reference was recorded on "
                         f"({recorded.data}); pass that data, or another `reference`")
    acc = ParityAccumulator(source.description)
    for batch in source.batches(pp, batch_size=batch_size):
        start, stop = acc.n, acc.n + len(batch)
        if stop > recorded.count:
            break
        out = candidate.run(batch.as_input(candidate.input_dtype, pp))
        if out.shape[1] != recorded.num_classes:
            raise UsageError(f"the candidate outputs {out.shape[1]} classes but the recorded reference "
                             f"{recorded.num_classes}: not the same model")
        logits = recorded.logits[start:stop] if start < len(recorded.logits) else None
        acc.update_ranked(recorded.topk[start:stop], out, batch.labels, ref_logits=logits)
    if acc.n != recorded.count:
        raise UsageError(f"{source.description}: {acc.n} decodable samples here, {recorded.count} when the "
                         "reference was recorded")
    return acc.result()


# ----------------------------------------------------------------------------- gates and parity by task


def task_gate(task: str, precision: str, given: Gate | DenseGate | None = None) -> Gate | DenseGate:
    """``given``, else ``precision``'s gate for ``task`` (classifiers: ``*_GATE``, others ``*_DENSE_GATES``).

    A classifier's gate (top-1) cannot judge a segmentation or backbone artifact, nor the reverse:
    such a ``given`` is refused.
    """
    if given is None:
        if task == "classify":
            return {"fp32": FP32_GATE, "fp16": FP16_GATE, "int8": INT8_GATE}[precision]
        return {"fp32": FP32_DENSE_GATES, "fp16": FP16_DENSE_GATES, "int8": INT8_DENSE_GATES}[precision][task]
    if isinstance(given, DenseGate) == (task == "classify"):
        want = "Gate (top-1)" if task == "classify" else "DenseGate (pixel agreement, mIoU, cosine)"
        raise UsageError(f"a {type(given).__name__} cannot judge a {task} model: it takes a {want}")
    return given


def int8_gate_with_drop(task: str, max_drop: float) -> Gate | DenseGate:
    """The INT8 gate of ``task`` allowing a drop of ``max_drop`` points: top-1 (classify), mIoU (segment).

    A backbone has no drop to allow (its gate is each output's cosine): refused.
    """
    if task == "classify":
        return Gate(max_drop=max_drop)
    if task == "segment":
        from dataclasses import replace

        return replace(INT8_DENSE_GATES["segment"], max_miou_drop=max_drop)
    raise UsageError(f"a drop of {max_drop} points is a top-1 or mIoU drop; a {task} is gated by each output's "
                     "cosine (docs/tasks.md)")


def measure_task_parity(reference: Session, candidate: Session, source: DataSource, manifest: Manifest, *,
                        batch_size: int = 32) -> Parity | DenseParity:
    """The parity ``manifest.task`` is gated on: logits in batches (classify), else ``measure_dense_parity``."""
    if manifest.task == "classify":
        return measure_parity(reference, candidate, source, manifest.preprocess, batch_size=batch_size)
    return measure_dense_parity(reference, candidate, source, manifest.preprocess, segment=manifest.task == "segment")
