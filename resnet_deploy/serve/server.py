"""Run the ``tritonserver`` that nvidia-pytriton bundles, over a model repository, and stop it cleanly.

:func:`serve_artifacts` writes a Python-backend repository for the artifacts (the same writer and
checks as ``resnet-export triton``, model = our runtime Session behind Triton's dynamic batcher)
into a private workspace and starts the server on it; :func:`launch` starts it on any
repository (``resnet-export triton``'s native ones too: there the bundled server, which has only
the Python backend, proves that it parsed and accepted each configuration before failing on the
missing backend library).

The server binds 127.0.0.1 unless told otherwise, runs in its own process group (its Python-backend
stubs with it), and :meth:`TritonProcess.stop` sends SIGINT (Triton finishes in-flight requests),
then SIGKILL to the whole group if it outlives the timeout, and removes the workspace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.serve.env import ServingEnv, find_env

#: the package this process runs, put on the stubs' PYTHONPATH
PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: how the Python-backend model (triton_model.py) finds that package: the stub's interpreter ignores PYTHONPATH
PACKAGE_PATH_VAR = "RESNET_DEPLOY_PACKAGE_PATH"
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000  # 0: a free port
    grpc_port: int = 8001  # 0: a free port
    allow_remote: bool = False  # bind an address other hosts can reach
    exit_on_error: bool = True  # stop at startup when a model fails to load
    startup_timeout_s: float = 180.0
    exit_timeout_s: int = 15  # Triton's wait for in-flight requests at shutdown


def check_host(host: str, *, allow_remote: bool) -> None:
    """Refuse an address other hosts can reach unless ``allow_remote``."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"--host {host!r}: give an IP address (127.0.0.1, ::1, or with --allow-remote 0.0.0.0)") from None
    if not address.is_loopback and not allow_remote:
        raise UsageError(f"--host {host} is reachable from other machines and the server has no authentication; "
                         "pass --allow-remote to bind it anyway")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TritonProcess:
    """A running tritonserver; use as a context manager, or call :meth:`stop`."""

    def __init__(self, process: subprocess.Popen, *, workspace: Path, host: str, http_port: int, grpc_port: int,
                 log_path: Path, exit_timeout_s: int) -> None:
        self.process = process
        self.pgid = process.pid  # start_new_session: the server leads its own group
        self.workspace = workspace
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.log_path = log_path
        self._exit_timeout_s = exit_timeout_s
        self._stopped = False

    def __enter__(self) -> TritonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def http_url(self) -> str:
        return f"{_bracket(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{_bracket(self.host)}:{self.grpc_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def request(self, method: str, path: str, body: dict | None = None, *, timeout: float = 10.0) -> Any:
        """One KServe v2 HTTP call (JSON), for health, repository and statistics endpoints."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def ready(self) -> bool:
        try:
            self.request("GET", "/v2/health/ready", timeout=2.0)
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                tail = self._errors()
                self.stop()
                raise DeployError(f"tritonserver exited with code {self.process.returncode} while starting:\n{tail}")
            if self.ready():
                return
            time.sleep(0.2)
        tail = self._errors()
        self.stop()
        raise DeployError(f"tritonserver was not ready after {timeout_s:.0f} s:\n{tail}")

    def wait_live(self, timeout_s: float) -> None:
        """Wait until the HTTP endpoint answers (models may still have failed: see :meth:`model_states`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive():
            try:
                self.request("GET", "/v2/health/live", timeout=2.0)
                return
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.2)
        tail = self._errors()
        self.stop()
        raise DeployError(f"tritonserver did not come up:\n{tail}")

    def model_states(self) -> dict[str, dict[str, str]]:
        """``{name: {"state": ..., "reason": ...}}`` from the repository index."""
        return {m["name"]: {"state": m.get("state", ""), "reason": m.get("reason", "")}
                for m in self.request("POST", "/v2/repository/index", {})}

    def _errors(self) -> str:
        text = self.log_tail(200).splitlines()
        errors = [line for line in text if line.startswith("E") or "error" in line.lower()]
        return "\n".join((errors or text)[-LOG_TAIL_LINES:])

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGINT, wait for Triton's graceful exit, then SIGKILL the group; remove the workspace. Idempotent."""
        if self._stopped:
            return self.process.returncode
        self._stopped = True
        timeout_s = self._exit_timeout_s + 10 if timeout_s is None else timeout_s
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)  # stubs that outlived the server, or a server that hung
        self.process.wait()
        shutil.rmtree(self.workspace, ignore_errors=True)
        return self.process.returncode

    def group_alive(self) -> bool:
        """Whether any process of the server's group (server, Python-backend stubs) still runs (zombies aside)."""
        return bool(group_members(self.pgid))


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _workspace(env: ServingEnv) -> Path:
    """A private folder: the Python backend with the stub for the environment's Python, our package's path."""
    ws = Path(tempfile.mkdtemp(prefix="resnet-serve-"))
    backend = ws / "backends" / "python"
    backend.mkdir(parents=True)
    for item in env.python_backend.iterdir():
        if item.is_file():
            shutil.copy2(item, backend / item.name)
    shutil.copy2(env.stub, backend / "triton_python_backend_stub")
    (ws / "pythonpath").mkdir()
    (ws / "pythonpath" / "resnet_deploy").symlink_to(PACKAGE_DIR, target_is_directory=True)
    return ws


def launch(repo: str | os.PathLike[str], *, options: ServerOptions = ServerOptions(), env: ServingEnv | None = None,
           workspace: Path | None = None, wait: str = "ready") -> TritonProcess:
    """Start tritonserver on ``repo``; ``wait``: "ready" (every model loaded), "live" (endpoint up) or "none"."""
    check_host(options.host, allow_remote=options.allow_remote)
    env = env or find_env()
    ws = workspace or _workspace(env)
    try:
        http_port = options.http_port or free_port(options.host)
        grpc_port = options.grpc_port or free_port(options.host)
        while grpc_port == http_port:
            grpc_port = free_port(options.host)
        cmd = [str(env.tritonserver), f"--model-repository={Path(repo).resolve()}",
               f"--backend-directory={ws / 'backends'}", f"--cache-directory={env.caches}",
               f"--http-address={options.host}", f"--http-port={http_port}",
               f"--grpc-address={options.host}", f"--grpc-port={grpc_port}",
               "--allow-metrics=false", "--disable-auto-complete-config", "--strict-readiness=true",
               f"--exit-on-error={'true' if options.exit_on_error else 'false'}",
               f"--exit-timeout-secs={options.exit_timeout_s}", "--log-verbose=0"]
        child_env = dict(os.environ)
        child_env.pop("PYTHONHOME", None)
        child_env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(env.libs), child_env.get("LD_LIBRARY_PATH")) if p)
        child_env["PATH"] = os.pathsep.join((str(env.root / "bin"), child_env.get("PATH", "")))
        child_env[PACKAGE_PATH_VAR] = str(ws / "pythonpath")  # our package only, never this environment's numpy 2
        child_env.pop("PYTHONPATH", None)
        child_env["PYTHONNOUSERSITE"] = "1"
        child_env.pop("VIRTUAL_ENV", None)
        log_path = ws / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=child_env, start_new_session=True)
    except BaseException:
        if workspace is None:
            shutil.rmtree(ws, ignore_errors=True)
        raise
    server = TritonProcess(process, workspace=ws, host=options.host, http_port=http_port, grpc_port=grpc_port,
                           log_path=log_path, exit_timeout_s=options.exit_timeout_s)
    try:
        if wait == "ready":
            server.wait_ready(options.startup_timeout_s)
        elif wait == "live":
            server.wait_live(options.startup_timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def serve_artifacts(artifacts: Sequence[str | os.PathLike[str]], *, names: Sequence[str] | None = None,
                    options: ServerOptions = ServerOptions(), instances: int = 1, cpu_cores: int | None = None,
                    preferred: tuple[int, ...] | None = None, queue_delay_us: int = 100, max_batch: int | None = None,
                    allow_ungated: bool = False, env: ServingEnv | None = None) -> TritonProcess:
    """Write a Python-backend repository for ``artifacts`` into a private workspace and serve it (until ready)."""
    from resnet_deploy.deploy.triton import TritonOptions, plan_repository, write_repository

    check_host(options.host, allow_remote=options.allow_remote)
    topts = TritonOptions(backend="python", instances=instances, cpu_cores=cpu_cores, preferred=preferred,
                          queue_delay_us=queue_delay_us, max_batch=max_batch, allow_ungated=allow_ungated)
    entries = plan_repository(artifacts, names=names, options=topts)  # every refusal before the server starts
    env = env or find_env()
    ws = _workspace(env)
    try:
        repo = write_repository(entries, ws / "models", readme=False)
    except BaseException:
        shutil.rmtree(ws, ignore_errors=True)
        raise
    return launch(repo, options=options, env=env, workspace=ws)


def serve_until_signal(server: TritonProcess, *, on_stop: Callable[[str], None] = print,
                       on_ready: Callable[[], None] | None = None) -> int:
    """Block until SIGINT/SIGTERM (or the server dies), then stop it cleanly; the server's exit code.

    ``on_ready`` runs once the signals are routed here: what it prints (the URLs) may be answered
    by a signal at once, and that signal must stop the server, not interrupt the command.
    """
    stop = threading.Event()
    received: list[str] = []

    def handler(signum, frame):  # noqa: ARG001 - signal API
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_ready is not None:
            on_ready()
        while not stop.wait(0.5):
            if not server.alive():
                on_stop(f"tritonserver exited on its own (code {server.process.returncode}):\n{server.log_tail()}")
                break
        if received:
            on_stop(f"{received[0]}: stopping tritonserver (in-flight requests finish first)")
        code = server.stop()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 0 if received else (code or 1)
