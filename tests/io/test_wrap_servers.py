"""MCP servers that the wrap tests run as real subprocesses (no tests here).

``python tests/io/test_wrap_servers.py sdk``: a server built with the official
SDK (``MCPServer``), with tools that stream progress, ask the client for a
sampling completion and for its roots, and crash mid-call.

``python tests/io/test_wrap_servers.py raw MODE``: a hand-written stdio loop
that misbehaves on purpose (garbage on stdout, oversize lines, a partial line
at exit, a flood, ignoring SIGTERM), for the hostile-framing tests.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer


def sdk_server() -> None:
    server = MCPServer(name="wrap-test-server", version="1.0", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def read_file(path: str) -> str:
        """Pretend to read a file."""
        return f"contents of {path}"

    @server.tool()
    def run_command(command: str) -> str:
        """A tool the tests' policy denies."""
        return f"ran {command}"

    @server.tool()
    async def progress(steps: int, ctx: Context) -> str:
        """Report progress `steps` times, then answer."""
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        return f"done after {steps} steps"

    @server.tool()
    async def ask_model(prompt: str, ctx: Context) -> str:
        """Ask the client for a sampling completion (server -> client request)."""
        result = await ctx.session.create_message(
            messages=[
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=prompt)
                )
            ],
            max_tokens=16,
        )
        content = result.content
        return f"model said: {getattr(content, 'text', content)}"

    @server.tool()
    async def client_roots(ctx: Context) -> str:
        """Ask the client for its roots (server -> client request)."""
        result = await ctx.session.list_roots()
        return ",".join(str(root.uri) for root in result.roots)

    @server.tool()
    def crash() -> str:
        """Die in the middle of the call."""
        sys.stderr.write("wrap-test-server: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)

    server.run("stdio")


def _reply(rpc_id: Any, result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result}).encode() + b"\n"


def raw_server(mode: str) -> None:
    """Answers initialize, tools/list and tools/call; ``mode`` says how to
    misbehave."""
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "fail-start":
        sys.stderr.write("wrap-test-server: cannot open the database: no such file\n")
        sys.exit(3)
    if mode == "flood":
        # 24 MiB of garbage without a newline before anything valid.
        chunk = b"x" * (1 << 20)
        for _ in range(24):
            out.write(chunk)
        out.write(b"\n")
        out.flush()
    for line in stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        rpc_id = msg.get("id")
        method = msg.get("method")
        if rpc_id is None:
            continue
        if method == "initialize":
            result: Any = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": f"raw-{mode}", "version": "1"},
            }
        elif method == "tools/list":
            result = {
                "tools": [
                    {"name": n, "inputSchema": {"type": "object"}}
                    for n in ("echo", "big", "run_command")
                ]
            }
        elif method == "tools/call":
            name = msg["params"]["name"]
            if mode == "interleave":
                out.write(b"this is not JSON\n{not json either}\n\n[1,2\n")
            if name == "big":
                size = int(msg["params"]["arguments"]["size"])
                result = {"content": [{"type": "text", "text": "y" * size}]}
            elif name == "exit-partial":
                out.write(b'{"jsonrpc":"2.0","id":' + json.dumps(rpc_id).encode() + b',"res')
                out.flush()
                os._exit(0)
            else:
                result = {"content": [{"type": "text", "text": json.dumps(msg["params"])}]}
        else:
            out.write(
                json.dumps(
                    {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32601, "message": method}}
                ).encode()
                + b"\n"
            )
            out.flush()
            continue
        out.write(_reply(rpc_id, result))
        out.flush()
    if mode == "ignore-term":
        # Ignore stdin EOF too: only SIGKILL stops this one.
        while True:
            time.sleep(1)


if __name__ == "__main__":
    if sys.argv[1] == "sdk":
        sdk_server()
    else:
        raw_server(sys.argv[2])
