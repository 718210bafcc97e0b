"""Atomic publication: a failure or a kill leaves the old file or nothing (docs/reliability.md, cases 7-9)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_deploy import publish
from resnet_deploy.errors import UsageError
from resnet_deploy.publish import atomic_path, check_destination, write_bytes


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".resnet-deploy-tmp-"))


def test_failure_mid_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_disk_full_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        write_bytes(target, b"new" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_killed_while_writing_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    code = (
        "import os, sys\n"
        "from resnet_deploy.publish import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert target.read_bytes() == b"old"  # the partial write never took the artifact's name


def test_success_replaces_and_sets_readable_mode(tmp_path):
    target = tmp_path / "m.json"
    write_bytes(target, b"{}")
    assert target.read_bytes() == b"{}" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert _leftovers(tmp_path) == []


def test_destination_checks(tmp_path):
    (tmp_path / "exists.onnx").write_bytes(b"x")
    with pytest.raises(UsageError, match="already exists"):
        check_destination(tmp_path / "exists.onnx")
    assert check_destination(tmp_path / "exists.onnx", overwrite=True).name == "exists.onnx"
    with pytest.raises(UsageError, match="does not exist"):
        check_destination(tmp_path / "missing" / "m.onnx")
    with pytest.raises(UsageError, match="is a directory"):
        check_destination(tmp_path)


def test_read_only_folder_fails_before_work(tmp_path):
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
    else:  # root ignores mode bits; a read-only mount is the real case
        ro = Path("/sys")
        try:
            publish.check_destination(ro / "probe.onnx")
            pytest.skip("running as root with no read-only folder to test against")
        except UsageError:
            pass
    with pytest.raises(UsageError, match="not writable"):
        check_destination(ro / "m.onnx")
