"""Publishing an ONNX artifact: manifest into ``metadata_props``, atomic save, sha256, sidecar.

Shared by every stage that writes ONNX (FP32, FP16, INT8), so all of them publish the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import METADATA_KEY, Manifest, manifest_path, read_manifest
from resnet_deploy.publish import atomic_path, atomic_paths, check_destination, sha256_file
from resnet_deploy.recorded import RecordedReference, reference_path

if TYPE_CHECKING:
    import onnx

#: a recorded reference and its bytes, as ``recorded.read_recorded`` returns them
Recorded = tuple[RecordedReference, bytes]


def check_outputs(output: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Check the artifact, its sidecar and its recorded reference can be published, before any work."""
    output = check_destination(output, overwrite=overwrite)
    check_destination(manifest_path(output), overwrite=overwrite)
    check_destination(reference_path(output), overwrite=overwrite)
    return output


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """One self-contained file (no external data), written atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        _save(model, tmp)


def _save(model: onnx.ModelProto, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=False)


def with_reference(manifest: Manifest, reference: Recorded | None) -> Manifest:
    """``manifest`` recording ``reference`` (its hash and what it holds) as the artifact's, or none."""
    return manifest.derive(reference=None if reference is None else reference[0].entry(reference[1]))


def publish_artifact(output: Path, write: Callable[[Path], None], manifest: Manifest, *, overwrite: bool,
                     reference: Recorded | None = None) -> Manifest:
    """Publish ``output`` (``write`` fills a temporary path), its recorded reference and its sidecar together.

    All three are written first and moved into place only when all are written, the artifact first
    and the sidecar last (``publish.atomic_paths``): a failure leaves the old files or none. Without
    ``overwrite`` the artifact is published only under a name nobody took meanwhile, and only the
    run that published it writes the other two. Returns the manifest with the artifact's sha256 and
    the recorded reference's entry.
    """
    manifest = with_reference(manifest, reference)
    ref_file = reference_path(output)
    paths = [output, *([ref_file] if reference else []), manifest_path(output)]
    with atomic_paths(*paths, overwrite=overwrite) as tmps:
        write(tmps[0])
        if reference is not None:
            tmps[1].write_bytes(reference[1])
        final = manifest.derive(source={**manifest.source, "sha256": sha256_file(tmps[0])})
        tmps[-1].write_text(final.to_json(), encoding="utf-8")
    if reference is None:
        ref_file.unlink(missing_ok=True)  # one left by an earlier export to this name would describe another model
    return final


def publish_onnx(model: onnx.ModelProto, output: Path, manifest: Manifest, *, overwrite: bool,
                 reference: Recorded | None = None) -> Manifest:
    """Embed ``manifest`` in ``model`` and publish it with its recorded reference (``publish_artifact``).

    The embedded copy cannot hold the file's own hash; the sidecar adds ``source.sha256``.
    """
    embedded = with_reference(manifest, reference).to_json()
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, embedded
    return publish_artifact(output, lambda tmp: _save(model, tmp), manifest, overwrite=overwrite, reference=reference)


def parent_manifest(onnx_path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an input ONNX (its sidecar, else the copy in ``metadata_props``), after checking the file.

    Every stage that reads an ONNX calls this first: it rejects what is not an ONNX model and any
    external data that points outside the model's folder (``../../etc/passwd``, absolute paths,
    symlinks leading out), before onnxruntime, ModelOpt or TensorRT would follow those paths.
    """
    model = load_checked(onnx_path)
    if (found := read_manifest(onnx_path)) is not None:
        return found
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return Manifest.from_json(prop.value, origin=f"{onnx_path} metadata")
    raise UsageError(f"{onnx_path}: has no resnet-deploy manifest (export it with `resnet-export onnx`)")


def load_checked(onnx_path: str | os.PathLike[str]) -> onnx.ModelProto:
    """The ONNX graph without its external data, which must lie inside the model's folder."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(onnx_path)
    if not path.is_file():
        raise UsageError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{path}: not an ONNX model ({str(exc).splitlines()[0][:120]})") from exc
    if not model.graph.node:
        raise UsageError(f"{path}: not an ONNX model (empty graph)")
    folder = path.resolve().parent
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or ".." in Path(location).parts or not target.is_relative_to(folder):
            raise UsageError(f"{path}: external data {location!r} of {tensor.name!r} points outside the model's folder")
    return model
