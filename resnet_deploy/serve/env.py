"""The serving environment: a virtual environment for the Python side of the bundled Triton server.

``nvidia-pytriton`` bundles a real ``tritonserver`` binary with the Python backend; the backend's
stub process embeds a CPython that needs numpy < 2 (with numpy 2 it returned wrong shapes and a
classification request crashed the server), while the exporter's torch, onnx and ModelOpt want
numpy 2. So the server's Python side lives in its own environment: numpy < 2, the CPU
``onnxruntime``, Pillow and nvidia-pytriton, made once by ``resnet-serve setup``. resnet-deploy
itself is not installed there: each server start puts this process's own ``resnet_deploy``
package (a symlink, nothing else from this environment) on the stub's ``PYTHONPATH``, so the
server always runs the code that wrote its repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError

#: what the serving environment holds (the one place these pins live)
REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy>=1.26,<2", "onnxruntime>=1.20", "Pillow>=10")
ENV_VAR = "RESNET_DEPLOY_SERVE_ENV"
SETUP_HINT = "run `resnet-serve setup` (a separate environment: pytriton needs numpy<2)"


def default_env_dir() -> Path:
    """``$RESNET_DEPLOY_SERVE_ENV``, else ``<cache>/serve-env-py3.X`` (the stub must match the Python version)."""
    if env := os.environ.get(ENV_VAR):
        return Path(env)
    from resnet_deploy.demo import cache_dir

    return cache_dir() / f"serve-env-py{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass(frozen=True)
class ServingEnv:
    """Where the bundled server and its Python side are."""

    root: Path  # the virtual environment
    python: Path
    python_version: str  # "3.11": picks the backend stub
    pytriton: Path  # site-packages/pytriton

    @property
    def tritonserver(self) -> Path:
        return self.pytriton / "tritonserver" / "bin" / "tritonserver"

    @property
    def libs(self) -> Path:
        """The bundled shared libraries (auditwheel's folder beside the package)."""
        return self.pytriton.parent / "nvidia_pytriton.libs"

    @property
    def python_backend(self) -> Path:
        return self.pytriton / "tritonserver" / "backends" / "python"

    @property
    def stub(self) -> Path:
        return self.pytriton / "tritonserver" / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    @property
    def caches(self) -> Path:
        return self.pytriton / "tritonserver" / "caches"


def _probe(python: Path) -> tuple[str, Path, str]:
    """(python version, pytriton folder, numpy version) as the environment's own interpreter sees them."""
    code = ("import sys, pathlib, numpy, pytriton; print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
            "print(pathlib.Path(pytriton.__file__).parent); print(numpy.__version__)")
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or ["?"]
        raise MissingDependencyError(f"{python}: the serving environment is incomplete ({last[0]}); {SETUP_HINT}") from exc
    version, pytriton, numpy_version = out.split()
    return version, Path(pytriton), numpy_version


def find_env(root: str | os.PathLike[str] | None = None) -> ServingEnv:
    """The serving environment at ``root`` (default :func:`default_env_dir`), checked; else one line saying how to make it."""
    root = Path(root) if root is not None else default_env_dir()
    python = root / "bin" / "python"
    if not python.exists():
        raise MissingDependencyError(f"no serving environment at {root}: {SETUP_HINT}")
    version, pytriton, numpy_version = _probe(python)
    if int(numpy_version.split(".")[0]) >= 2:
        raise MissingDependencyError(f"{root} has numpy {numpy_version}; the bundled Triton's Python backend "
                                     f"needs numpy<2: {SETUP_HINT}")
    env = ServingEnv(root=root, python=python, python_version=version, pytriton=pytriton)
    for need in (env.tritonserver, env.stub, env.python_backend / "libtriton_python.so"):
        if not need.exists():
            raise MissingDependencyError(f"{need}: missing from the serving environment (nvidia-pytriton is for "
                                         f"manylinux_2_35 x86-64/aarch64, Python 3.8-3.13); {SETUP_HINT}")
    return env


def create_env(root: str | os.PathLike[str] | None = None, *, log=print) -> ServingEnv:
    """Make the serving environment (a venv with :data:`REQUIREMENTS`, about 200 MB); idempotent."""
    root = Path(root) if root is not None else default_env_dir()
    if root.exists() and not (root / "bin" / "python").exists() and any(root.iterdir()):
        raise UsageError(f"{root}: exists and is not a virtual environment; name another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    if not (root / "bin" / "python").exists():
        log(f"creating the serving environment in {root}")
        _run([sys.executable, "-m", "venv", str(root)])
    log(f"installing {', '.join(REQUIREMENTS)}")
    _run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          *REQUIREMENTS])
    return find_env(root)


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as exc:
        raise DeployError(f"{' '.join(cmd[:4])} ... failed (exit {exc.returncode}); see the output above") from exc
