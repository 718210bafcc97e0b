"""Typed errors. The library raises these; only the CLI turns them into exit codes.

Messages name the library's own parameters, in backquotes (```max_drop` must be >= 0``): that
is what a Python caller passed. The CLI prints each backquoted name as the command's flag
(``--max-drop``) where it has one (``cli.common.in_flags``).
"""

from __future__ import annotations


class DeployError(Exception):
    """The work failed (exit code 1)."""

    exit_code = 1


class UsageError(DeployError):
    """The caller passed something invalid: an option, a path, a file of the wrong kind (exit 2)."""

    exit_code = 2


class GateError(DeployError):
    """An accuracy gate was missed; nothing was published (exit 1)."""


class MissingDependencyError(DeployError):
    """An optional dependency (TensorRT, cuda-python, onnxruntime) is not installed (exit 1)."""


def require(module: str, *, install: str):
    """Import ``module`` or raise one line that says what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{module} is not installed: {install} ({exc})") from exc
