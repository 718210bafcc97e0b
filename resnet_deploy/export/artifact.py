"""Publishing an ONNX artifact: manifest into ``metadata_props``, atomic save, sha256, sidecar.

Shared by every stage that writes ONNX (FP32, FP16, INT8), so all of them publish the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import METADATA_KEY, Manifest, manifest_path, read_manifest
from resnet_deploy.publish import atomic_path, check_destination, sha256_file, write_text

if TYPE_CHECKING:
    import onnx


def check_outputs(output: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Check the artifact and its sidecar can be published, before any work."""
    output = check_destination(output, overwrite=overwrite)
    check_destination(manifest_path(output), overwrite=overwrite)
    return output


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """One self-contained file (no external data), written atomically."""
    import onnx

    with atomic_path(path, overwrite=overwrite) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)


def publish_onnx(model: onnx.ModelProto, output: Path, manifest: Manifest, *, overwrite: bool) -> Manifest:
    """Embed ``manifest`` in ``model``, write both atomically; return the manifest with the file's sha256.

    The embedded copy cannot hold the file's own hash; the sidecar adds ``source.sha256``. Without
    ``overwrite`` the model is published only under a name nobody took meanwhile; the run that
    publishes it then writes the sidecar.
    """
    embedded = manifest.to_json()
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, embedded
    save_onnx(model, output, overwrite=overwrite)
    final = manifest.derive(source={**manifest.source, "sha256": sha256_file(output)})
    write_text(manifest_path(output), final.to_json(), overwrite=True)
    return final


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
