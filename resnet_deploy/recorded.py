"""The recorded reference: PyTorch's answers on the evaluation data, kept beside the artifact.

A device that runs an artifact has no PyTorch to compare it with, so the export records what
PyTorch answered on its evaluation data, in ``<artifact>.ref.npz``: per sample the classes ranked
best first (top-k) and the label, and the full logits of the first samples within a fixed budget
(large sets stay small). The file is tied to the data by the data's digest and to the artifact by
the manifest, which holds its sha256 (``manifest.reference``); like the sidecar, its name is the
artifact's plus a suffix. Derived artifacts (FP16, INT8,
engines) carry a copy under their own name. A file whose bytes do not hash to the manifest's
sha256 is refused, never used. numpy only: ``resnet-bench`` reads it on devices without torch.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_deploy.errors import UsageError
from resnet_deploy.publish import sha256_bytes

if TYPE_CHECKING:
    from resnet_deploy.manifest import Manifest

SUFFIX = ".ref.npz"
TOPK = 5
#: float32 values of full logits kept (1 MiB): all 540 digits samples, 262 samples of 1000 classes
LOGIT_BUDGET = 262_144


def reference_path(artifact: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.ref.npz``: one per artifact, beside it."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


def ranking(logits: np.ndarray, k: int = TOPK) -> np.ndarray:
    """The ``k`` best classes of each row, best first (ties: the lower class first, as ``argmax``)."""
    return np.argsort(-logits, axis=1, kind="stable")[:, : min(k, logits.shape[1])]


@dataclass(frozen=True)
class RecordedReference:
    data_digest: str  # DataSource.digest() of the data it was recorded on
    data: str  # that data's description when it was recorded
    topk: np.ndarray  # (N, k) int64: each sample's classes, best first
    logits: np.ndarray  # (M, C) float32: the full logits of the first M <= N samples
    labels: np.ndarray | None  # (N,) int64, -1 where unlabelled; None for unlabelled data
    num_classes: int

    @property
    def count(self) -> int:
        return len(self.topk)

    def to_bytes(self) -> bytes:
        """An ``.npz`` (``np.load`` reads it) whose bytes depend on the contents only: the same export
        gives the same file, hash and ONNX bytes (np.savez would stamp the time into the zip)."""
        arrays = {"topk": self.topk, "logits": self.logits, "num_classes": np.int64(self.num_classes),
                  "data_digest": np.str_(self.data_digest), "data": np.str_(self.data)}
        if self.labels is not None:
            arrays["labels"] = self.labels
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            for name, value in arrays.items():
                array = io.BytesIO()
                np.lib.format.write_array(array, np.asanyarray(value), allow_pickle=False)
                z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), array.getvalue())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str) -> RecordedReference:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                topk, logits = z["topk"].astype(np.int64), z["logits"].astype(np.float32)
                labels = z["labels"].astype(np.int64) if "labels" in z.files else None
                num_classes = int(z["num_classes"])
                digest, description = str(z["data_digest"]), str(z["data"])
        except (KeyError, ValueError, OSError) as exc:
            raise UsageError(f"{origin}: not a recorded reference ({exc})") from exc
        n = len(topk)
        if (topk.ndim != 2 or n == 0 or logits.ndim != 2 or len(logits) > n or logits.shape[1] != num_classes
                or (labels is not None and labels.shape != (n,)) or not np.isfinite(logits).all()
                or topk.min() < 0 or topk.max() >= num_classes):
            raise UsageError(f"{origin}: malformed recorded reference")
        return cls(digest, description, topk, logits, labels, num_classes)

    def entry(self, blob: bytes) -> dict[str, Any]:
        """The manifest's ``reference``: the sha256 of ``blob`` (this, as ``to_bytes`` wrote it) and what it holds.

        The file is always ``reference_path(artifact)``, as the sidecar is ``manifest_path(artifact)``:
        the entry names no file, so the artifact's bytes do not depend on its name.
        """
        return {"sha256": sha256_bytes(blob), "reference": "pytorch",
                "data": self.data, "data_digest": self.data_digest, "count": self.count, "topk": self.topk.shape[1],
                "logits": len(self.logits)}


class ReferenceRecorder:
    """Collects the reference's logits batch by batch (``update``) into a ``RecordedReference``."""

    def __init__(self, *, data: str, data_digest: str, num_classes: int, budget: int = LOGIT_BUDGET) -> None:
        self.data, self.digest, self.num_classes = data, data_digest, num_classes
        self.rows = max(1, budget // max(1, num_classes))  # full-logit rows kept
        self.topk: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.kept = 0
        self.labelled = True

    def update(self, logits: np.ndarray, labels: np.ndarray | None) -> None:
        self.topk.append(ranking(logits))
        take = min(len(logits), self.rows - self.kept)
        if take > 0:
            self.logits.append(logits[:take].astype(np.float32))
            self.kept += take
        if labels is None:
            self.labelled = False
        else:
            self.labels.append(np.asarray(labels, dtype=np.int64))

    def result(self) -> RecordedReference:
        if not self.topk:
            raise UsageError(f"{self.data}: no samples to record a reference on")
        labels = np.concatenate(self.labels) if self.labelled and self.labels else None
        logits = np.concatenate(self.logits) if self.logits else np.zeros((0, self.num_classes), np.float32)
        return RecordedReference(self.digest, self.data, np.concatenate(self.topk).astype(np.int64), logits, labels,
                                 self.num_classes)


def read_recorded(artifact: str | os.PathLike[str], manifest: Manifest, *,
                  missing_ok: bool = False) -> tuple[RecordedReference, bytes] | None:
    """The recorded reference beside ``artifact`` (``reference_path``) and its bytes, checked against the sha256
    ``manifest`` records.

    None where the manifest records none. A missing file (unless ``missing_ok``: then a warning and
    None, for a stage that derives a child without it) or bytes that do not hash to the manifest's
    sha256 (a changed file) raise UsageError.
    """
    entry = manifest.reference
    if not entry:
        return None
    path = reference_path(artifact)
    if not path.is_file():
        if missing_ok:
            warnings.warn(f"{path}: the recorded reference its manifest names is missing; the new artifact gets none",
                          stacklevel=2)
            return None
        raise UsageError(f"{path}: the recorded reference its manifest names is missing")
    blob = path.read_bytes()
    if sha256_bytes(blob) != entry.get("sha256"):
        raise UsageError(f"{path}: sha256 {sha256_bytes(blob)[:12]}... differs from the manifest's "
                         f"{str(entry.get('sha256'))[:12]}...: the recorded reference was changed; refusing it")
    return RecordedReference.from_bytes(blob, origin=str(path)), blob
