"""What the built-in fast upstream MCP server answers, independent of transport.

The HTTP server (``fast_server``) and the stdio server (``stdio_server``) both
call :func:`dispatch` with one decoded JSON-RPC message and get back what to
send.  The tools are synthetic on purpose: ``read_file`` never touches the
disk and ``fetch_url`` never opens a socket, so pointing a benchmark at
``../../etc/passwd`` or an SSRF URL is harmless.  The point of this server is
to be a correct MCP peer that costs as little CPU as possible, so that what a
benchmark measures is the proxy in front of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

SERVER_NAME: Final = "agentwall-fast-upstream"
SERVER_VERSION: Final = "1.0"

# Newest first; we answer initialize with the client's version when we know it.
PROTOCOL_VERSIONS: Final = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION: Final = PROTOCOL_VERSIONS[0]

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602

_STRING: Final = {"type": "string"}
_INTEGER: Final = {"type": "integer"}


def _schema(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


TOOLS: Final[list[dict[str, Any]]] = [
    {
        "name": "echo",
        "description": "Return the text argument unchanged.",
        "inputSchema": _schema(["text"], text=_STRING),
    },
    {
        "name": "read_file",
        "description": "Return synthetic contents for a path (never reads the disk).",
        "inputSchema": _schema(["path"], path=_STRING),
    },
    {
        "name": "write_file",
        "description": "Pretend to write content to a path (never writes the disk).",
        "inputSchema": _schema(["path", "content"], path=_STRING, content=_STRING),
    },
    {
        "name": "search",
        "description": "Return synthetic search results for a query.",
        "inputSchema": _schema(["query"], query=_STRING, limit=_INTEGER),
    },
    {
        "name": "fetch_url",
        "description": "Pretend to fetch a URL (never opens a connection).",
        "inputSchema": _schema(["url"], url=_STRING),
    },
    {
        "name": "run_command",
        "description": "Pretend to run a shell command (never runs anything).",
        "inputSchema": _schema(["command"], command=_STRING),
    },
    {
        "name": "progress",
        "description": "Send `steps` progress notifications `delay_ms` apart, then a result.",
        "inputSchema": _schema([], steps=_INTEGER, delay_ms=_INTEGER),
    },
]
TOOL_NAMES: Final = frozenset(t["name"] for t in TOOLS)

RESOURCES: Final[list[dict[str, Any]]] = [
    {"uri": "memo://readme", "name": "readme", "mimeType": "text/plain"},
]
PROMPTS: Final[list[dict[str, Any]]] = [
    {
        "name": "summarise",
        "description": "Ask for a summary of a text.",
        "arguments": [{"name": "text", "required": True}],
    },
]

CAPABILITIES: Final = {
    "tools": {"listChanged": False},
    "resources": {"listChanged": False, "subscribe": False},
    "prompts": {"listChanged": False},
    "logging": {},
}


@dataclass(slots=True)
class Reply:
    """What to send back for one message.

    ``response`` is None for notifications and client responses (HTTP: 202).
    ``progress`` holds notifications to stream before the response, each sent
    ``delay_s`` apart (HTTP: as an SSE stream; stdio: as lines).
    """

    response: dict[str, Any] | None
    progress: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0
    new_session: bool = False


def error(rpc_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}


def _result(rpc_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "result": result}


def _text(text: str, *, is_error: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if is_error:
        out["isError"] = True
    return out


def _str_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise _ParamsError(f"argument {name!r} must be a string")
    return value


def _int_arg(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _ParamsError(f"argument {name!r} must be an integer in [{low}, {high}]")
    return value


class _ParamsError(Exception):
    pass


def _call_tool(rpc_id: Any, params: dict[str, Any]) -> Reply:
    name = params.get("name")
    args = params.get("arguments") or {}
    if not isinstance(name, str) or not isinstance(args, dict):
        bad = "tools/call needs a string name and object arguments"
        return Reply(error(rpc_id, INVALID_PARAMS, bad))
    if name not in TOOL_NAMES:
        return Reply(error(rpc_id, INVALID_PARAMS, f"Unknown tool: {name}"))
    try:
        if name == "echo":
            return Reply(_result(rpc_id, _text(_str_arg(args, "text"))))
        if name == "read_file":
            path = _str_arg(args, "path")
            return Reply(_result(rpc_id, _text(f"synthetic contents of {path}\n")))
        if name == "write_file":
            path = _str_arg(args, "path")
            size = len(_str_arg(args, "content"))
            return Reply(_result(rpc_id, _text(f"pretended to write {size} characters to {path}")))
        if name == "search":
            query = _str_arg(args, "query")
            limit = _int_arg(args, "limit", 3, 0, 100)
            hits = "\n".join(f"{i + 1}. result for {query[:64]}" for i in range(limit))
            return Reply(_result(rpc_id, _text(hits)))
        if name == "fetch_url":
            url = _str_arg(args, "url")
            return Reply(_result(rpc_id, _text(f"pretended to fetch {url}")))
        if name == "run_command":
            command = _str_arg(args, "command")
            return Reply(_result(rpc_id, _text(f"pretended to run {command!r}")))
        # progress
        steps = _int_arg(args, "steps", 3, 0, 1000)
        delay_ms = _int_arg(args, "delay_ms", 0, 0, 10_000)
    except _ParamsError as exc:
        # Since 2025-11-25 bad arguments are a tool execution error the model
        # can see and correct, not a protocol error.
        return Reply(_result(rpc_id, _text(str(exc), is_error=True)))
    meta = params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    notes: list[dict[str, Any]] = []
    if isinstance(token, str | int) and not isinstance(token, bool):
        notes = [
            {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {
                    "progressToken": token,
                    "progress": i + 1,
                    "total": steps,
                    "message": f"step {i + 1} of {steps}",
                },
            }
            for i in range(steps)
        ]
    return Reply(
        _result(rpc_id, _text(f"done after {steps} steps")), progress=notes, delay_s=delay_ms / 1000
    )


def _initialize(rpc_id: Any, params: dict[str, Any]) -> Reply:
    asked = params.get("protocolVersion")
    version = asked if asked in PROTOCOL_VERSIONS else LATEST_VERSION
    result = {
        "protocolVersion": version,
        "capabilities": CAPABILITIES,
        "serverInfo": {"name": SERVER_NAME, "version": SERVER_VERSION},
    }
    return Reply(_result(rpc_id, result), new_session=True)


def _read_resource(rpc_id: Any, params: dict[str, Any]) -> Reply:
    uri = params.get("uri")
    if uri != "memo://readme":
        return Reply(error(rpc_id, -32002, f"Resource not found: {uri}"))
    contents = [{"uri": uri, "mimeType": "text/plain", "text": "The fast upstream's readme."}]
    return Reply(_result(rpc_id, {"contents": contents}))


def _get_prompt(rpc_id: Any, params: dict[str, Any]) -> Reply:
    if params.get("name") != "summarise":
        return Reply(error(rpc_id, INVALID_PARAMS, f"Unknown prompt: {params.get('name')}"))
    args = params.get("arguments") or {}
    text = args.get("text", "") if isinstance(args, dict) else ""
    message = {"role": "user", "content": {"type": "text", "text": f"Summarise: {text}"}}
    return Reply(_result(rpc_id, {"messages": [message]}))


_SIMPLE: Final[dict[str, dict[str, Any]]] = {
    "ping": {},
    "tools/list": {"tools": TOOLS},
    "resources/list": {"resources": RESOURCES},
    "resources/templates/list": {"resourceTemplates": []},
    "prompts/list": {"prompts": PROMPTS},
    "logging/setLevel": {},
}


def dispatch(message: Any) -> Reply:
    """Answer one decoded JSON-RPC message (never raises)."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return Reply(error(None, INVALID_REQUEST, "Invalid Request"))
    method = message.get("method")
    has_id = "id" in message
    rpc_id = message.get("id")
    if method is None:
        if has_id and ("result" in message or "error" in message):
            return Reply(None)  # a response to a server->client request: nothing to say
        return Reply(error(rpc_id if has_id else None, INVALID_REQUEST, "Invalid Request"))
    if not isinstance(method, str) or (
        has_id and (not isinstance(rpc_id, str | int) or isinstance(rpc_id, bool))
    ):
        return Reply(error(None, INVALID_REQUEST, "Invalid Request"))
    if not has_id:
        return Reply(None)  # notifications (initialized, cancelled, ...) need no answer
    params = message.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return Reply(error(rpc_id, INVALID_PARAMS, "params must be an object"))
    simple = _SIMPLE.get(method)
    if simple is not None:
        return Reply(_result(rpc_id, simple))
    if method == "tools/call":
        return _call_tool(rpc_id, params)
    if method == "initialize":
        return _initialize(rpc_id, params)
    if method == "resources/read":
        return _read_resource(rpc_id, params)
    if method == "prompts/get":
        return _get_prompt(rpc_id, params)
    return Reply(error(rpc_id, METHOD_NOT_FOUND, f"Method not found: {method}"))
