"""The table of backends and ``open_session``, which opens an artifact with the one its suffix names.

The only module of the runtime that knows every backend; each backend is imported when a session
of its kind opens, so ``onnxruntime`` or ``tensorrt`` load only where they are used. A new backend
is a ``Session`` subclass in its own module plus one row here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import read_manifest

if TYPE_CHECKING:
    from resnet_deploy.runtime.session import Session

#: TensorRT engine file suffixes (trtexec writes .plan or .engine)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
#: backend name -> the artifact suffixes it opens
BACKENDS: dict[str, tuple[str, ...]] = {"onnxruntime": (".onnx",), "tensorrt": ENGINE_SUFFIXES}


def backend_for(path: str | os.PathLike[str]) -> str | None:
    """The backend whose suffixes include ``path``'s, or None."""
    suffix = Path(path).suffix.lower()
    return next((name for name, suffixes in BACKENDS.items() if suffix in suffixes), None)


def open_session(path: str | os.PathLike[str], *, backend: str | None = None, **options: Any) -> Session:
    """Open ``path`` with the backend its suffix names (``.onnx``: onnxruntime; ``.plan``/``.engine``: tensorrt).

    The manifest is the sidecar ``<artifact>.json``; an ONNX without one uses the copy embedded
    in its metadata. ``options`` go to the backend: onnxruntime takes ``provider`` ("cpu" |
    "cuda" | "tensorrt"), ``threads``, ``io_binding``, ``device_id`` and ``trt_cache_dir``;
    tensorrt takes the options its session documents.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if backend is None:
        backend = backend_for(path)
        if backend is None:
            raise UsageError(f"{path}: cannot tell the backend from the suffix (use .onnx, .plan or .engine)")
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} ({' or '.join(BACKENDS)})")
    manifest = read_manifest(path)
    if backend == "onnxruntime":
        from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

        return OnnxRuntimeSession(path, manifest=manifest, **options)
    from resnet_deploy.runtime.tensorrt import TensorRTSession

    return TensorRTSession(path, manifest=manifest, **options)
