"""Helpers for the ``agentwall start`` integration tests (no tests here).

Run as a script, this file is the upstream MCP server the tests put behind the
proxy: a real server built on the official SDK, served over streamable HTTP.

    python test_start_support.py upstream --port 3000 [--json-response]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from starlette.requests import Request
from starlette.responses import PlainTextResponse

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str,
    *,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    output: Path | None = None,
) -> None:
    """Poll ``url`` until it answers (any status) or ``proc`` dies."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = output.read_text(errors="replace") if output is not None else ""
            raise RuntimeError(
                f"process exited with {proc.returncode} before serving {url}:\n{out}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (http URL we built)
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def stop(proc: subprocess.Popen[bytes], *, sig: int | None = None, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        if sig is None:
            proc.terminate()
        else:
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


def spawn(cmd: list[str], output: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """A child whose stdout and stderr go to a file: a pipe nobody reads
    would fill up and block the child."""
    with output.open("wb") as sink:
        return subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, **kwargs)


def verify_log(
    log_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``agentwall verify-log`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agentwall", "verify-log", str(log_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def upstream_server(tmp: Path, *, json_response: bool = False) -> Iterator[tuple[str, Path]]:
    """A real SDK MCP server subprocess; yields (url, control dir)."""
    port = free_port()
    control = tmp / f"upstream-{port}"
    control.mkdir()
    cmd = [sys.executable, str(HERE), "upstream", "--port", str(port), "--control", str(control)]
    if json_response:
        cmd.append("--json-response")
    output = control / "server.out"
    proc = spawn(cmd, output, cwd=tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, output=output)
        yield f"http://127.0.0.1:{port}/mcp", control
    finally:
        stop(proc)


@contextlib.contextmanager
def agentwall_start(
    tmp: Path,
    mcp_url: str,
    *args: str,
    policy: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """A real ``agentwall start`` subprocess; yields (proxy URL, process, log path)."""
    port = free_port()
    log_path = tmp / f"audit-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "agentwall",
        "start",
        "--listen",
        f"127.0.0.1:{port}",
        "--mcp-url",
        mcp_url,
        "--log-path",
        str(log_path),
        *args,
    ]
    if policy is not None:
        policy_path = tmp / f"policy-{port}.yaml"
        policy_path.write_text(policy, encoding="utf-8")
        cmd += ["--policy", str(policy_path)]
    full_env = {**os.environ, **(env or {})}
    output = tmp / f"agentwall-{port}.out"
    proc = spawn(cmd, output, cwd=tmp, env=full_env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, output=output)
        yield f"http://127.0.0.1:{port}/mcp", proc, log_path
    finally:
        stop(proc)


def run_upstream(port: int, control: Path, json_response: bool) -> None:
    server = MCPServer("agentwall-test-upstream")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def read_file(path: str) -> str:
        """Pretend to read a file."""
        return f"contents of {path}"

    @server.tool()
    def record(text: str) -> str:
        """Append the text to the control directory's calls.txt: what the
        upstream really ran, for tests that must prove a call never arrived."""
        with (control / "calls.txt").open("a", encoding="utf-8") as f:
            f.write(text + "\n")
        return f"recorded {text}"

    @server.tool()
    def delete_everything() -> str:
        """A tool no sane policy allows."""
        (control / "deleted").write_text("the upstream ran delete_everything", encoding="utf-8")
        return "deleted"

    @server.tool()
    async def wait_for_go(steps: int, ctx: Context) -> str:
        """Report progress, then wait until the test creates the 'go' file:
        a proxy that buffered the stream would never let the test see the
        progress, and the test would time out."""
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        go = control / "go"
        for _ in range(600):
            if go.exists():
                return "went"
            await asyncio.sleep(0.05)
        return "gave up waiting"

    @server.tool()
    async def ask_model(prompt: str, ctx: Context) -> str:
        """Ask the client for a sampling completion (a server -> client
        request; handshake-era protocols only)."""
        result = await ctx.session.create_message(
            messages=[
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=prompt)
                )
            ],
            max_tokens=16,
        )
        return f"model said: {getattr(result.content, 'text', result.content)}"

    @server.resource("config://app")
    def app_config() -> str:
        """Static configuration."""
        return "mode=test"

    @server.resource("note://{name}")
    def note(name: str) -> str:
        """A note by name."""
        return f"note {name}"

    @server.prompt()
    def greet(name: str) -> str:
        """Greet someone."""
        return f"Please greet {name} warmly."

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    server.run(
        transport="streamable-http",
        host="127.0.0.1",
        port=port,
        json_response=json_response,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upstream")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--control", type=Path, required=True)
    up.add_argument("--json-response", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "upstream":
        run_upstream(args.port, args.control, args.json_response)


if __name__ == "__main__":
    main()

__all__: list[Any] = []
