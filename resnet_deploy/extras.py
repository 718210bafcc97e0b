"""Which optional extra brings which library, and the one check that says what to install.

The base install (numpy, Pillow, click) is the runtime and ``resnet-bench`` for artifacts; the
export toolchain is the ``export`` extra (docs/install.md). Code that needs a library of the
toolchain asks ``require_export`` for it: without it, one line names the extra to install and the
command exits 2 (the install, not the work, is what is wrong). Standard library only.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from resnet_deploy.errors import UsageError

EXPORT_INSTALL = "pip install 'resnet-deploy[export]'"
#: the import names of the ``export`` extra that ``resnet-export`` needs (pyproject.toml lists the distributions)
EXPORT_MODULES = ("torch", "onnx", "onnxscript", "onnxsim", "modelopt", "sklearn", "matplotlib")


class MissingExtraError(UsageError):
    """A library of an optional extra is not installed (exit 2: install the extra)."""


def require_export(module: str, *, needed_by: str) -> ModuleType:
    """Import ``module`` (one of the export toolchain's) or raise one line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{needed_by} needs {module.split('.')[0]}, which is not installed: "
                                f"{EXPORT_INSTALL} ({exc})") from exc


def check_export_toolchain(*, needed_by: str) -> None:
    """Fail in one line, before any work, when a library of the export toolchain is missing (nothing is imported)."""
    missing = [m for m in EXPORT_MODULES if not importable(m)]
    if missing:
        raise MissingExtraError(f"{needed_by} needs the export toolchain ({', '.join(missing)} not installed): "
                                f"{EXPORT_INSTALL}")


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it
        return False
