"""The import contracts in ``.importlinter`` hold, and they would catch the mistakes they exist for.

CI runs ``lint-imports`` on the tree; these tests run it too, then on a copy of the package with
one bad import injected (torch under ``runtime/``, a runtime module importing the exporter, an
import cycle), and check that the contract meant to catch it breaks and names the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import resnet_deploy

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(resnet_deploy.__file__).resolve().parent
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(root: Path) -> tuple[int, str]:
    """``lint-imports`` on the package under ``root`` with the repository's contracts: exit code, report.

    The report's line breaks (it wraps at 80 columns) become single spaces.
    """
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", LINT, str(REPO / ".importlinter"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


@pytest.fixture()
def package_copy(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "resnet_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def inject(root: Path, module: str, line: str) -> None:
    path = root / "resnet_deploy" / module
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text
    path.write_text(text.replace(marker, marker + "\n" + line + "\n", 1))


def test_the_tree_keeps_every_contract():
    rc, report = lint_imports(PACKAGE.parent)
    assert rc == 0, report
    assert "0 broken" in report


def test_the_copy_is_the_same_package(package_copy):
    rc, report = lint_imports(package_copy)  # the copy is what the tests below modify: it must pass as it is
    assert rc == 0, report


def test_torch_under_runtime_breaks_the_runtime_contract(package_copy):
    inject(package_copy, "runtime/session.py", "import torch  # noqa: F401")
    rc, report = lint_imports(package_copy)
    assert rc == 1, report
    assert "runtime imports none of its siblings above it, nor torch" in report
    assert "resnet_deploy.runtime.session -> torch" in report


def test_a_lazy_exporter_import_under_runtime_breaks_it_too(package_copy):
    # Deferred imports count: the runtime must not reach the exporter even inside a function.
    path = package_copy / "resnet_deploy" / "runtime" / "onnxruntime.py"
    path.write_text(path.read_text() + "\n\ndef _leak():\n    from resnet_deploy.export.onnx import onnx_from_torch\n"
                    "    return onnx_from_torch\n")
    rc, report = lint_imports(package_copy)
    assert rc == 1, report
    assert "resnet_deploy.runtime.onnxruntime -> resnet_deploy.export.onnx" in report


def test_an_import_cycle_breaks_the_contracts(package_copy):
    # The cycle this refactor removed: the Session base module importing a backend that imports it.
    inject(package_copy, "runtime/session.py", "from resnet_deploy.runtime import onnxruntime  # noqa: F401")
    rc, report = lint_imports(package_copy)
    assert rc == 1, report
    assert "No cycles are allowed in resnet_deploy.runtime" in report
    assert "resnet_deploy.runtime.session is not allowed to import resnet_deploy.runtime.onnxruntime" in report


def test_a_cycle_between_packages_breaks_the_layers(package_copy):
    inject(package_copy, "benchmarks/harness.py", "from resnet_deploy.cli import bench  # noqa: F401")
    rc, report = lint_imports(package_copy)
    assert rc == 1, report
    assert "resnet_deploy.benchmarks is not allowed to import resnet_deploy.cli" in report
