"""Keep third-party tools contained while they work: inputs copied, temp files and chatter kept in.

ModelOpt and onnxruntime's quantizer print progress bars and per-batch notices to stdout, log
through the root logger, write temporary files to the system temp folder (left behind when they
fail) and write files beside their input model (``<name>-inferred.onnx``, ``<name>_named.onnx``).
So they get a private copy of the input in a work folder inside the output folder, which the
caller removes whatever happens; ``tool_scope`` points ``tempfile`` there, captures their output
unless --debug (kept for error messages) and restores everything after.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class ToolOutput:
    """What a tool printed inside ``tool_scope`` (empty with --debug: it went to the terminal)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def tail(self, lines: int = 5) -> str:
        text = [line for line in self.buffer.getvalue().splitlines() if line.strip()]
        return " | ".join(text[-lines:])


@contextlib.contextmanager
def tool_scope(workdir: Path, *, debug: bool = False) -> Iterator[ToolOutput]:
    """Run a tool with its temp files in ``workdir`` and, unless ``debug``, its chatter captured."""
    out = ToolOutput()
    saved_tempdir = tempfile.tempdir
    root = logging.getLogger()
    saved_level = root.level
    tempfile.tempdir = str(workdir)  # modelopt's mkstemp and ORT's TemporaryDirectory land in workdir
    try:
        if debug:
            yield out
            return
        with contextlib.redirect_stdout(out.buffer), contextlib.redirect_stderr(out.buffer), \
                _loggers_into(out.buffer, prefix="modelopt"):
            # onnxruntime.quantization warns through the root logger ("Please consider pre-processing").
            root.setLevel(logging.ERROR)
            with onnxruntime_log_severity(3):
                yield out
    finally:
        tempfile.tempdir = saved_tempdir
        root.setLevel(saved_level)


@contextlib.contextmanager
def _loggers_into(stream: io.StringIO, *, prefix: str) -> Iterator[None]:
    """Point the ``prefix`` loggers at ``stream``: ModelOpt binds its handler to the real stdout at import."""
    manager = logging.root.manager
    names = [prefix, *(n for n in list(manager.loggerDict) if n.startswith(prefix + "."))]
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    handler = logging.StreamHandler(stream)
    for lg in loggers:
        lg.handlers = [handler] if lg.name == prefix else []
        lg.propagate = lg.name != prefix
    try:
        yield
    finally:
        for lg, level, handlers, propagate in saved:
            lg.setLevel(level)
            lg.handlers = handlers
            lg.propagate = propagate


@contextlib.contextmanager
def onnxruntime_log_severity(level: int) -> Iterator[None]:
    """onnxruntime's C++ logger writes to fd 2 directly; 3 = errors only. Restored to ORT's default (2)."""
    try:
        import onnxruntime as ort
    except ImportError:
        yield
        return
    ort.set_default_logger_severity(level)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)


def private_copy(model: Path, workdir: Path, *, name: str = "parent.onnx") -> Path:
    """A copy of ``model`` in ``workdir`` for a tool that writes beside its input (never a link: it could write through)."""
    dest = workdir / name
    shutil.copyfile(model, dest)
    return dest
