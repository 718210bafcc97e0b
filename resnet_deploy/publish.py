"""Atomic publication of artifacts and hashing (docs/reliability.md, promise 2).

Every file the tool produces is written to a temporary file in the destination folder, fsynced
and moved into place: with ``os.replace`` where replacing is allowed, else with ``os.link``,
which fails when the name exists, so of two runs publishing the same new path exactly one
does. Only regular files are ever replaced (never a device, FIFO, socket or folder). A failure
or a kill leaves the old file or nothing. What this process published is kept in order
(``published()``), so an interrupted command can say truthfully what it left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from resnet_deploy.errors import UsageError

_TMP_PREFIX = ".resnet-deploy-tmp-"
_PUBLISHED: list[Path] = []
_CREATED: list[Path] = []  # output folders this process made, outermost first
_CRITICAL = [0]  # depth of critical sections (a name published but not yet recorded)


def published() -> list[Path]:
    """Every path this process published so far (files and folders), in order."""
    return list(_PUBLISHED)


@contextlib.contextmanager
def publishing(path: str | os.PathLike[str]) -> Iterator[None]:
    """For a writer that moves ``path`` into place itself (a Triton model folder): the move and its
    record in ``published()`` happen together, an interrupt waits for both."""
    with _critical():
        yield
        _PUBLISHED.append(Path(path))


def in_critical_section() -> bool:
    """True while a publication is between its rename and its record (an interrupt must wait)."""
    return _CRITICAL[0] > 0


@contextlib.contextmanager
def _critical() -> Iterator[None]:
    _CRITICAL[0] += 1
    try:
        yield
    finally:
        _CRITICAL[0] -= 1


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create the output folder ``path`` (and missing parents), remembering which ones this process made."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    for p in missing:
        p.mkdir(exist_ok=True)
        _CREATED.append(p)
    return path


def remove_empty_created() -> None:
    """Remove the folders ``make_folder`` made that are still empty (after a failed or interrupted run)."""
    for p in reversed(_CREATED):
        with contextlib.suppress(OSError):
            p.rmdir()  # only succeeds while empty


def exists_error(path: str | os.PathLike[str]) -> UsageError:
    return UsageError(f"{path}: exists; pass `overwrite=True` to replace it")


def _kind(mode: int) -> str | None:
    """What a non-regular file is ("a device", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def refuse_special(path: str | os.PathLike[str]) -> None:
    """Refuse a destination that exists and is not a regular file (followed through symlinks)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{path}: cannot check the destination ({exc.strerror})") from exc
    if (kind := _kind(mode)) is not None:
        link = " (a symlink to it)" if os.path.islink(path) else ""
        raise UsageError(f"{path}: is {kind}{link}; only a regular file is ever replaced")


#: digests already computed, by (device, inode, size, mtime_ns): a file is hashed once per process
#: while it is unchanged, so checking an artifact against its manifest on every open costs one read
_DIGESTS: dict[tuple[int, int, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if (known := _DIGESTS.get(key)) is not None:
            return known
        h = hashlib.sha256()
        while block := f.read(chunk):
            h.update(block)
    _DIGESTS[key] = digest = h.hexdigest()
    return digest


def check_sha256(path: str | os.PathLike[str], expected: str | None, *, origin: str) -> None:
    """Refuse ``path`` unless its sha256 is ``expected`` (the one its manifest ``origin`` records).

    A sidecar that belongs to another artifact (an INT8 model's ``.json`` beside the FP32 one)
    would otherwise describe the wrong file: its precision, preprocessing and parity. None: the
    manifest records no hash (embedded copies cannot hold their own file's hash).
    """
    if expected is None or not Path(path).is_file():
        return
    if sha256_file(path) != expected:
        raise UsageError(f"{path}: does not match the sha256 recorded in its manifest {origin} (truncated, "
                         "modified, or the manifest belongs to another file): export it again")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_destination(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail before any work if ``path`` cannot be published (missing or read-only folder, exists)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    refuse_special(path)
    if not folder.is_dir():
        raise UsageError(f"{folder}: output folder does not exist")
    try:  # a real probe: os.access says yes to root even on a read-only mount
        fd, probe = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{folder}: output folder is not writable ({exc.strerror})") from exc
    if os.path.lexists(path) and not overwrite:
        raise exists_error(path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True, record: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it becomes ``path`` atomically.

    For writers that insist on a file name (onnx.save, TensorRT, matplotlib). The temporary file
    is removed on any failure, so a half-written artifact is never visible under its name.
    Without ``overwrite`` an existing ``path`` (also one that appeared while the work ran) is
    refused and left as it was. ``record``: list it in ``published()`` (not for caches).
    """
    with atomic_paths(path, overwrite=overwrite, record=record) as tmps:
        yield tmps[0]


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike[str], overwrite: bool = True, record: bool = True) -> Iterator[list[Path]]:
    """``atomic_path`` for files published together: one temporary path each, all written first.

    Only when the body succeeded are they fsynced and moved into place, in the order given; on any
    failure before that none of them is replaced. Without ``overwrite`` the first path claims the
    set: it is linked into place (refused if the name exists, also when it appeared meanwhile) and
    only the run that claimed it replaces the others. Put the file that commits the set (a
    manifest) last.
    """
    dests = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for path in dests:
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=path.suffix, dir=path.parent or ".")
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        for tmp in tmps:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        for path in dests:
            refuse_special(path)  # again: it may have become one while the work ran
        for i, (tmp, path) in enumerate(zip(tmps, dests)):
            with _critical():
                if overwrite or i > 0:
                    os.replace(tmp, path)
                else:
                    try:
                        os.link(tmp, path)  # fails if the name exists: one of two racing runs wins
                    except FileExistsError:
                        raise exists_error(path) from None
                if record:
                    _PUBLISHED.append(path)
    except OSError as exc:
        names = {str(p) for p in dests}
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename not in names:
            raise OSError(exc.errno, os.strerror(exc.errno), str(dests[0])) from exc  # name the destination
        raise
    finally:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def check_folder_destination(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail before any work if the folder ``path`` cannot be published (parent missing or read-only, exists)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a folder")
    if path.exists() and not overwrite:
        raise exists_error(path)
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
        with _critical():
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(staging, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.rename(staging, path)  # fails if a folder of that name appeared meanwhile (unless empty)
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                        raise exists_error(path) from None
                    raise
            _PUBLISHED.append(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
