"""Atomic publication of artifacts and hashing (docs/reliability.md, promise 2).

Every file the tool produces is written to a temporary file in the destination folder, fsynced
and moved into place with ``os.replace``: a failure or a kill leaves the old file or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from resnet_deploy.errors import UsageError

_TMP_PREFIX = ".resnet-deploy-tmp-"


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_destination(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail before any work if ``path`` cannot be published (missing or read-only folder, exists)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, expected a file path")
    if not folder.is_dir():
        raise UsageError(f"{folder}: output folder does not exist")
    try:  # a real probe: os.access says yes to root even on a read-only mount
        fd, probe = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{folder}: output folder is not writable ({exc.strerror})") from exc
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: already exists (pass `overwrite=True` to replace it)")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    For writers that insist on a file name (onnx.save, TensorRT, matplotlib). The temporary file
    is removed on any failure, so a half-written artifact is never visible under its name.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=path.suffix, dir=path.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))
