"""Starting and stopping the processes under test, exactly as a user would.

The upstream is ``python -m agentwall.demo.fast_server``; the proxy is
``python -m agentwall start ...`` with its readiness taken from ``GET /readyz``.
Each is stopped by its own PID: SIGTERM, a grace period, then SIGKILL for it
and for any descendant still alive (by PID, one at a time).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from agentwall.benchtool import procstat
from agentwall.benchtool.channels import child_env


class ProcessError(Exception):
    """A process under test failed to start or to become ready."""


def has_module(name: str) -> bool:
    """Whether ``name`` is importable here (e.g. a CLI command not built yet)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def key_env(directory: Path) -> dict[str, str]:
    """Keep the audit HMAC key in ``directory`` (the run's temporary directory).

    ``agentwall start``/``wrap`` generate a key on first use; without this they
    would write it to the user's ~/.config.  ``verify-log`` and ``report`` need
    the same environment to find it.
    """
    return {"AGENTWALL_AUDIT_KEY_DIR": str(directory)}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """Status and body of a GET, or None when nothing answered."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(64 * 1024)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def http_status(host: str, port: int, path: str, timeout: float = 2.0) -> int | None:
    answer = http_get(host, port, path, timeout)
    return None if answer is None else answer[0]


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Managed:
    """A child process with its output in files, stopped by PID on exit."""

    name = "process"

    def __init__(self, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.workdir = workdir
        self.env = child_env(env)
        self.stdout_path = workdir / f"{self.name}.stdout"
        self.stderr_path = workdir / f"{self.name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self, what: str) -> ProcessError:
        code = self.proc.poll() if self.proc is not None else None
        return ProcessError(
            f"{self.name} {what} (exit code {code}); command: {' '.join(self.argv)}\n"
            f"--- stderr (last lines) ---\n{tail(self.stderr_path)}"
        )

    def stop(self, grace: float = 15.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        descendants = list(procstat.tree([proc.pid]))
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        # Anything it started and left behind is ours to end too, by PID.
        for pid in descendants:
            if pid != proc.pid and procstat.read_stat(pid) is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        return proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class FastUpstream(Managed):
    """The built-in fast upstream over HTTP."""

    name = "upstream"

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        argv = [sys.executable, "-m", "agentwall.demo.fast_server", "--host", host, "--port", "0"]
        super().__init__(argv, workdir)
        self.url = ""

    def start(self, timeout: float = 30.0) -> FastUpstream:
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("READY "):
                    self.url = line.split(" ", 1)[1].strip()
                    return self
            if not self.alive():
                raise self.failure("exited before it was ready")
            time.sleep(0.02)
        raise self.failure("was not ready in time")


class Proxy(Managed):
    """``agentwall start`` in front of ``upstream_url``."""

    name = "proxy"

    def __init__(
        self,
        upstream_url: str,
        workdir: Path,
        *,
        policy: str | None,
        extra_args: list[str] | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self.log_path = workdir / "audit.log"
        argv = [
            sys.executable,
            "-m",
            "agentwall",
            "start",
            "--listen",
            f"{host}:{self.port}",
            "--mcp-url",
            upstream_url,
            "--log-path",
            str(self.log_path),
        ]
        if policy is not None:
            argv += ["--policy", policy]
        argv += extra_args or []
        super().__init__(argv, workdir, {**key_env(workdir), **(env or {})})

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    def start(self, timeout: float = 60.0) -> Proxy:
        self.spawn()
        deadline = time.monotonic() + timeout
        last: tuple[int, bytes] | None = None
        while time.monotonic() < deadline:
            last = http_get(self.host, self.port, "/readyz", timeout=1.0)
            if last is not None and last[0] == 200:
                return self
            if not self.alive():
                raise self.failure("exited before /readyz answered 200")
            time.sleep(0.05)
        # /readyz names the part that is not ready (workers, writer, upstream).
        said = "" if last is None else f"; it last answered {last[0]} {last[1][:300]!r}"
        raise self.failure(f"did not answer 200 on /readyz in {timeout:g} s{said}")


def agentwall_command(
    *args: str, timeout: float = 120.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agentwall ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "agentwall", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(env),
        check=False,
    )
