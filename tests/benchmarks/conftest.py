from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def run_script():
    """Run a development script of the repository's ``benchmarks/`` folder as a user does
    (``python benchmarks/NAME args...``): its exit code and its stdout + stderr."""

    def run(name: str, *args: object, timeout: float = 600) -> tuple[int, str]:
        done = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, check=False)
        return done.returncode, done.stdout + done.stderr

    return run
