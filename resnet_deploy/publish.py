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


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """``atomic_path`` for files published together: one temporary path each, all written first.

    Only when the body succeeded are they fsynced and moved into place, in the order given (put
    the file that commits the set, a manifest, last); on any failure none of them is replaced.
    """
    tmps: list[Path] = []
    try:
        for path in map(Path, paths):
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=path.suffix, dir=path.parent or ".")
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        for tmp in tmps:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def check_folder_destination(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail before any work if the folder ``path`` cannot be published (parent missing or read-only, exists)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a folder")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: already exists (pass `overwrite=True` to replace it)")
    check_destination(path.parent / f"{_TMP_PREFIX}probe", overwrite=True)  # parent exists and is writable
    return path


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success it becomes ``path`` in one rename.

    An existing ``path`` (only with ``overwrite``) is first moved aside in one rename, then
    removed. On any failure the staging folder is removed and ``path`` is left as it was.
    """
    import shutil

    path = check_folder_destination(path, overwrite=overwrite)
    staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=path.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
