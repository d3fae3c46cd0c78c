"""The demo's upstream: a small MCP server built with the official ``mcp`` SDK.

It serves a tiny workspace over Streamable HTTP on 127.0.0.1.  Paths are
virtual: ``/workspace/...`` maps onto ``--root``, and the server refuses
anything outside it on its own (defence in depth: the demo shows AgentWall
stopping a traversal before the server ever sees it).

- ``read_file(path)``: really reads a file under the workspace;
- ``save_note(title, text)``: really writes ``/workspace/notes/<title>.md``;
- ``fetch_url(url)``: describes what it would fetch (the demo makes no
  outbound connections);
- ``run_shell(command)``: a dangerous tool that exists only to be refused (it
  never runs anything, even if a policy allowed it).

Run: ``python -m agentwall.demo.sdk_server --root DIR`` (needs the ``demo``
extra: ``pip install 'agentwall[demo]'``).  It prints ``READY <url>`` once
listening and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

WORKSPACE = "/workspace"


def build_server(root: Path) -> MCPServer:
    server = MCPServer(name="agentwall-demo-files", version="1.0", log_level="WARNING")

    def resolve(path: str) -> Path:
        if not (path == WORKSPACE or path.startswith(WORKSPACE + "/")):
            raise ToolError(f"{path!r} is outside {WORKSPACE}")
        real = (root / path[len(WORKSPACE) :].lstrip("/")).resolve()
        if real != root and root not in real.parents:
            raise ToolError(f"{path!r} resolves outside {WORKSPACE}")
        return real

    @server.tool()
    def read_file(path: str) -> str:
        """Read a text file from the workspace (paths start with /workspace/)."""
        try:
            return resolve(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ToolError(f"cannot read {path}: {exc.strerror}") from None

    @server.tool()
    def save_note(title: str, text: str) -> str:
        """Save a note as /workspace/notes/<title>.md."""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", title):
            raise ToolError("title must be 1-64 letters, digits, '-' or '_'")
        target = resolve(f"{WORKSPACE}/notes/{title}.md")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return f"saved {len(text)} characters to {WORKSPACE}/notes/{title}.md"

    @server.tool()
    def fetch_url(url: str) -> str:
        """Fetch a web page (the demo only says what it would fetch)."""
        return f"(demo) would fetch {url}"

    @server.tool()
    def run_shell(command: str) -> str:
        """Run a shell command (the demo never runs anything)."""
        return f"(demo) refusing to run {command!r}: this server never runs commands"

    return server


async def serve(root: Path, host: str, port: int) -> None:
    import uvicorn

    app = build_server(root).streamable_http_app(host=host)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()  # uvicorn handles SIGTERM/SIGINT: graceful stop

    async def announce() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        print(f"READY http://{host}:{bound}/mcp", flush=True)

    task = loop.create_task(announce())
    await server.serve(sockets=[sock])
    task.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentwall.demo.sdk_server")
    parser.add_argument("--root", required=True, type=Path, help="directory behind /workspace")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not root.is_dir():
        print(f"--root {root}: not a directory", file=sys.stderr)
        return 2
    asyncio.run(serve(root, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
