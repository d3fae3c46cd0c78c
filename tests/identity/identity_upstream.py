"""A real MCP server (official SDK, streamable HTTP) for the identity tests,
which records the headers of every request it receives, so tests can assert
that no client token ever reached it.

    python identity_upstream.py PORT HEADERS_JSONL
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn
from mcp.server import MCPServer
from starlette.requests import Request
from starlette.responses import PlainTextResponse


def main(port: int, record: str) -> None:
    server = MCPServer("identity-test-upstream")

    @server.tool()
    def whoami() -> str:
        """Answer with a fixed string (the upstream never learns the caller)."""
        return "upstream sees the proxy"

    @server.tool()
    def deploy(env: str) -> str:
        """Deploy somewhere."""
        return f"deployed to {env}"

    @server.tool()
    def read_file(path: str) -> str:
        """Pretend to read a file."""
        return f"contents of {path}"

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = server.streamable_http_app(json_response=True, host="127.0.0.1")

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
            with open(record, "a", encoding="utf-8") as sink:  # noqa: ASYNC230 (test recorder)
                sink.write(json.dumps({"method": scope["method"], "headers": headers}) + "\n")
        await app(scope, receive, send)

    uvicorn.run(recording, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
