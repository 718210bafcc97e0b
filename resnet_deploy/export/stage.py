"""The skeleton every stage shares that derives an ONNX artifact from the FP32 ONNX (FP16, INT8, the next one).

Each such stage opens the same way: check that the output and its sidecar may be written, read
and check the parent's manifest, require FP32, pick the evaluation data, hash the parent, open
the reference (the PyTorch model rebuilt from the manifest, else the parent ONNX) and a private
work folder inside the output folder, which is removed on success and failure alike. It ends the
same way too: one manifest builder (``Derived.manifest``) and ``Derived.publish``, which copies the
parent's recorded reference (``recorded.py``) beside the child. A stage writes
only its own work (convert, quantize, check) between the two::

    with derived_stage(onnx_path, output, what="FP16", eval_source=ev, overwrite=ow) as stage:
        model = convert(private_copy(stage.onnx_path, stage.work))
        parity = measure_task_parity(stage.reference, candidate, stage.eval_source, stage.parent)
        final = stage.publish(model, stage.manifest("fp16", model, parity=parity, ...))
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.export.artifact import Recorded, check_outputs, parent_manifest, publish_onnx
from resnet_deploy.manifest import package_versions
from resnet_deploy.publish import sha256_file
from resnet_deploy.recorded import read_recorded
from resnet_deploy.reference import reference_or_parent

if TYPE_CHECKING:
    import onnx

    from resnet_deploy.data import DataSource
    from resnet_deploy.manifest import Manifest
    from resnet_deploy.parity import DenseParity, Parity
    from resnet_deploy.runtime.session import Session

#: the packages whose versions a derived ONNX artifact's manifest records
VERSIONED = ("onnx", "onnxruntime-gpu", "onnxruntime", "nvidia-modelopt", "torch")


@dataclass
class Derived:
    """What a derived stage works with, opened by ``derived_stage``."""

    onnx_path: Path  # the FP32 parent
    output: Path
    parent: Manifest
    parent_sha256: str
    eval_source: DataSource
    reference: Session
    reference_label: str  # "pytorch", or the FP32 parent's name when the weights could not be rebuilt
    work: Path  # private, inside the output folder, removed afterwards
    overwrite: bool  # the caller's: without it the child is published only under a name nobody took
    recorded: Recorded | None = None  # the parent's recorded reference (checked), copied beside the child

    def publish(self, model: onnx.ModelProto, manifest: Manifest) -> Manifest:
        """Publish the child with ``manifest`` and a copy of the parent's recorded reference."""
        return publish_onnx(model, self.output, manifest, overwrite=self.overwrite, reference=self.recorded)

    def manifest(self, precision: str, model: onnx.ModelProto, *, parity: Parity | DenseParity, calibration: dict[str, Any] | None,
                 details: dict[str, Any]) -> Manifest:
        """The child manifest: the parent's, with this stage's precision, lineage, parity and details."""
        source = {k: v for k, v in self.parent.source.items() if k in ("weights", "weights_sha256")}
        return self.parent.derive(
            precision=precision,
            source={**source, "parent_sha256": self.parent_sha256, "calibration": calibration},
            parity={"reference": self.reference_label, **parity.to_dict()},
            versions=package_versions(*VERSIONED),
            details=details,
            build=None,
        )


def onnx_opset(model: onnx.ModelProto) -> int | None:
    """The default-domain opset of ``model``."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def derived_stage(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], *, what: str,
                  eval_source: DataSource | None, overwrite: bool, labels: bool = False) -> Iterator[Derived]:
    """Open a stage that derives ``output`` from the FP32 ``onnx_path`` (see the module docstring).

    ``what`` names the stage in messages ("FP16", "INT8"); ``labels``: a classifier's gate needs
    labelled evaluation data (a top-1 drop), checked on the first sample before any expensive work.
    Segmentation and backbone parents need none: their gates compare outputs with the reference
    (a segmentation gate scores mIoU where the data has masks, ``parity.DenseParity.failures``).
    """
    output = check_outputs(output, overwrite=overwrite)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UsageError(f"{onnx_path}: no such ONNX file")
    parent = parent_manifest(onnx_path)
    if parent.precision != "fp32":
        raise UsageError(f"{onnx_path}: is {parent.precision}; {what} starts from the FP32 ONNX "
                         "(the converters refuse graphs that are already converted)")
    eval_source = evaluation_source(parent, eval_source, what=what).for_model(parent)
    if labels and parent.task == "classify":
        require_labels(eval_source, parent)
    parent_sha = sha256_file(onnx_path)
    recorded = read_recorded(onnx_path, parent, missing_ok=True)
    reference, reference_label = reference_or_parent(parent, onnx_path)
    with reference, tempfile.TemporaryDirectory(prefix=".resnet-deploy-", dir=output.parent) as tmp:
        try:
            yield Derived(onnx_path, output, parent, parent_sha, eval_source, reference, reference_label, Path(tmp),
                          overwrite, recorded)
        except (DeployError, OSError) as exc:
            if (named := in_user_terms(exc, Path(tmp), parent=onnx_path, output=output)) is exc:
                raise
            raise named from exc


def in_user_terms(exc: DeployError | OSError, work: Path, *, parent: Path, output: Path) -> DeployError | OSError:
    """``exc`` naming the user's files instead of the private work copies: the parent's copy
    (``parent.onnx``) is ``parent``, anything else in ``work`` is the ``output`` being made."""
    def user(path: str) -> str:
        return str(parent) if Path(path).name == "parent.onnx" else str(output)

    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk of the output is full, whichever file hit it
            return OSError(exc.errno, exc.strerror, str(output))
        if exc.filename is None or not str(exc.filename).startswith(str(work)):
            return exc
        return OSError(exc.errno, exc.strerror, user(str(exc.filename)))
    text = re.sub(re.escape(str(work)) + r"/[^\s:'\"),]*", lambda m: user(m.group(0)), str(exc))
    return exc if text == str(exc) else type(exc)(text)


def evaluation_source(manifest: Manifest, eval_source: DataSource | None, *, what: str) -> DataSource:
    """``eval_source``, or the held-out part of the weights' own data for the artifact's task (the demo's
    digits or digits-seg); others must name theirs."""
    from resnet_deploy.weights import Weights

    if eval_source is not None:
        return eval_source
    weights = Weights.of(manifest)
    own = None if weights is None else weights.data_for(manifest.task)
    if own is not None:
        from resnet_deploy.data import open_source

        return open_source(own, split="eval")
    if manifest.task != "classify":
        raise UsageError(f"{what} needs evaluation data for its accuracy gate: pass `eval_source` (an image folder, "
                         "an .npy/.npz of images, or 'digits')")
    raise UsageError(f"{what} needs evaluation data for its accuracy gate: pass `eval_source` (an image folder with "
                     "class sub-folders, a labelled .npz, or 'digits')")


def require_labels(source: DataSource, manifest: Manifest) -> None:
    """A top-1 drop needs labels: check the first sample before any expensive work."""
    for batch in source.batches(manifest.preprocess, batch_size=1):
        if batch.labels is None:
            raise UsageError(f"{source.description}: has no labels; the INT8 gate measures a top-1 drop "
                             "(use class sub-folders or an .npz with 'labels')")
        return
    raise UsageError(f"{source.description}: no decodable samples to evaluate on")
