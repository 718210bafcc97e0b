"""Atomic publication: a failure or a kill leaves the old file or nothing; only regular files are
replaced; of two runs racing for one new name exactly one publishes (docs/reliability.md, cases 7-9, 23, 24)."""

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
    with pytest.raises(OSError, match="No space left") as caught:
        write_bytes(target, b"new" * 1000)
    monkeypatch.undo()
    assert caught.value.filename == str(target)  # the destination, not the hidden temporary file
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
    with pytest.raises(UsageError, match="exists; pass"):
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


# ------------------------------------------------------------------------------------ case 23

def _specials(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a socket, a folder, a device node, and a symlink to each."""
    import socket

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    sock.close()
    folder = tmp_path / "folder"
    folder.mkdir()
    found = {"a FIFO": fifo, "a socket": sock_path, "a directory": folder, "a device": Path("/dev/full")}
    for kind, target in list(found.items()):
        link = tmp_path / f"link-to-{target.name}"
        link.symlink_to(target)
        found[f"{kind} (a symlink to it)"] = link
    return found


def test_only_regular_files_are_ever_replaced(tmp_path):
    for kind, path in _specials(tmp_path).items():
        before = os.lstat(path)
        for overwrite in (False, True):
            with pytest.raises(UsageError, match=f"is {kind.split(' (')[0]}.*only a regular file is ever replaced"):
                check_destination(path, overwrite=overwrite)
            with pytest.raises(UsageError, match="only a regular file"):
                write_bytes(path, b"new", overwrite=overwrite)
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino), kind
    assert _leftovers(tmp_path) == []


def test_cli_refuses_a_device_or_fifo_output_before_any_work(tmp_path):
    """`-o /dev/full --overwrite` once replaced the device node and wrote a .json into /dev."""
    from click.testing import CliRunner

    from resnet_deploy.cli.export import cli

    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    sidecar_fifo = tmp_path / "side.onnx.json"
    os.mkfifo(sidecar_fifo)
    device = tmp_path / "device.onnx"  # a link, so that even a build that fails this test leaves /dev alone
    device.symlink_to("/dev/full")
    for output in (device, fifo, tmp_path / "side.onnx"):
        result = CliRunner().invoke(cli, ["onnx", "--arch", "resnet18", "-o", str(output), "--overwrite"])
        assert result.exit_code == 2, result.output
        assert "only a regular file is ever replaced" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert device.is_symlink() and not (tmp_path / "device.onnx.json").exists()
    assert fifo.is_fifo() and sidecar_fifo.is_fifo() and not (tmp_path / "side.onnx").exists()


# ------------------------------------------------------------------------------------ case 24

RACER = """
import sys, time
from pathlib import Path
from resnet_deploy.errors import UsageError
from resnet_deploy.publish import write_bytes
target, start, me = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
while time.time() < start:
    pass
try:
    write_bytes(target, me.encode() * 100_000, overwrite=False)
except UsageError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""


def test_two_runs_racing_for_one_name_publish_exactly_once(tmp_path):
    """Real processes released at the same instant, several rounds: one publishes, the other exits 2."""
    import time

    for round_ in range(6):
        target = tmp_path / f"model-{round_}.onnx"
        start = time.time() + 1.5  # both interpreters are up by then
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(target), str(start), name],
                                  stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
        codes = [p.wait(timeout=60) for p in procs]
        errors = [p.stderr.read() for p in procs]
        assert sorted(codes) == [0, 2], (codes, errors)
        winner = "ab"[codes.index(0)]
        assert target.read_bytes() == winner.encode() * 100_000  # the winner's bytes, never replaced
        assert "exists; pass `overwrite=True` to replace it" in errors[codes.index(2)]
        assert _leftovers(tmp_path) == []  # the loser wrote nothing
