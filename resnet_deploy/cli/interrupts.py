"""Ctrl-C and SIGTERM for every command: exit 130 (143), one truthful line, no traceback, no abort.

Python raises KeyboardInterrupt wherever the main thread happens to be. Two places cannot take
it: a heavy library's import (modelopt and onnxruntime initialise nanobind/pybind11 modules; an
exception thrown through that C++ aborts the process, exit 134) and the moment between a
publication's rename and its record (the closing line would not list a file that exists). The
handler installed here defers the signal while the main thread is inside either and delivers
it at the next safe point, as ``Interrupted``; the command line (``cli.common``) then prints
what this run published (``publish.published()``), removes the empty folders it made, and exits
128 + the signal number.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from resnet_deploy.publish import in_critical_section, published, remove_empty_created

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RETRY_S = 0.02  # how soon a deferred signal is looked at again
_IMPORTING = "importlib._bootstrap"  # also ``importlib._bootstrap_external``


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, delivered at a safe point."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_pending: list[int] = []
_finishing: list[bool] = []  # set once the command chose its exit: later signals are only recorded


def _unsafe(frame: FrameType | None) -> bool:
    """The main thread is importing a module or publishing a file."""
    if in_critical_section():
        return True
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_IMPORTING):
            return True
        frame = frame.f_back
    return False


def _handler(signum: int, frame: FrameType | None) -> None:
    if not _pending:
        _pending.append(signum)
    if not _finishing:
        _deliver(frame)


def _retry(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal API
    if _pending and not _finishing:
        _deliver(frame)


def _deliver(frame: FrameType | None) -> None:
    if _unsafe(frame):  # look again shortly; the import or the publication finishes first
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    raise Interrupted(_pending.pop())


def install() -> None:
    """Route SIGINT and SIGTERM through the deferring handler (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        signal.signal(s, _handler)
    signal.signal(signal.SIGALRM, _retry)


def finish(code: int) -> int:
    """The exit code of a command that is done: ``code``, unless a signal came while it ended.

    From here on a signal is ignored: raised now it would escape the command line's handlers. One
    that arrived (or was still deferred) before this point is reported as an interrupt, truthfully
    listing what the finished work published.
    """
    _stop_raising()
    if _pending and code < 128:
        return report(Interrupted(_pending.pop()))
    return code


def _stop_raising() -> None:
    """The command is ending: a signal from now on is ignored (one already pending is reported).

    Ignored rather than handled: at interpreter shutdown Python puts the default action back for
    every signal a Python function handles, and tearing down torch and onnxruntime takes seconds,
    so a signal then would kill the process (exit -2) after its work and its report were done.
    """
    _finishing.append(True)
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)


def report(exc: KeyboardInterrupt) -> int:
    """Print the one closing line of an interrupted command; the exit code to end with."""
    _stop_raising()
    remove_empty_created()
    code = exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT
    done = [str(p) for p in published() if p.exists()]
    what = f"published {', '.join(done)}" if done else "nothing was published"
    name = signal.Signals(code - 128).name
    sys.stderr.write(f"Interrupted ({name}); {what}.\n")
    sys.stderr.flush()
    return code
