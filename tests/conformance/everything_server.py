"""The conformance fixture server, on the official Python MCP SDK (no tests here).

``@modelcontextprotocol/conformance server --url ...`` tests a server that
offers a fixed set of fixtures: the tools, resources and prompts of the
harness's reference ``examples/servers/typescript/everything-server.ts``
(``test_simple_text``, ``test://static-text``, ``test_simple_prompt``, ...).
This module offers the same fixtures, written against the ``mcp`` SDK that
pip installs (2.3.0), so the harness and ``tests/conformance`` can drive it
directly and through ``agentwall start``. It serves both protocol eras: the
2025-11-25 handshake with sessions, the GET stream and resumable SSE (an
in-memory event store), and 2026-07-28 single-exchange requests.

Two fixtures exist only for ``tests/conformance`` (the harness never calls them):
``test_touch_watched_resource`` sends ``notifications/resources/updated`` to
every session subscribed to a URI, on that session's GET stream, and
``test_wait_for_file`` reports progress and then blocks until a file exists,
so a test can hold several SSE responses open at once.

    python everything_server.py --port 3001 [--host 127.0.0.1] [--retry-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer, RequestStateSecurity
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.server.session import ServerSession
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import PlainTextResponse

# A 1x1 red PNG and a minimal WAV, as the reference fixture sends them.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIA"
    "X8jx0gAAAABJRU5ErkJggg=="
)
WAV_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
WATCHED_URI = "test://watched-resource"

log = logging.getLogger("everything_server")


class MemoryEventStore(EventStore):
    """Every SSE event of every stream, kept so a client can resume with
    ``Last-Event-ID``. Event ids are a global counter, so they are unique per
    session as the transport chapter requires; replay stays on one stream."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, types.JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        number = len(self.events) + 1
        self.events.append((stream_id, number, message))
        return str(number)

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        try:
            after = int(last_event_id)
        except ValueError:
            return None
        if not 1 <= after <= len(self.events):
            return None
        stream_id = self.events[after - 1][0]
        for stream, number, message in self.events[after:]:
            if stream == stream_id and message is not None:  # None: a priming event
                await send_callback(EventMessage(message, str(number)))
        return stream_id


class UserResponse(BaseModel):
    response: str = Field(description="User's response")


class DefaultsForm(BaseModel):
    """SEP-1034: a default for every primitive type."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active",
        description="User status",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    verified: bool = Field(default=True, description="Verification status")


class EnumForm(BaseModel):
    """SEP-1330: the five enum shapes."""

    untitledSingle: str = Field(
        description="Select one option", json_schema_extra={"enum": ["option1", "option2"]}
    )
    titledSingle: str = Field(
        description="Select one option with titles",
        json_schema_extra={
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
            ]
        },
    )
    legacyEnum: str = Field(
        description="Select one option (legacy)",
        json_schema_extra={"enum": ["opt1", "opt2"], "enumNames": ["Option One", "Option Two"]},
    )
    untitledMulti: list[str] = Field(
        description="Select several options",
        json_schema_extra={"items": {"type": "string", "enum": ["option1", "option2"]}},
    )
    titledMulti: list[str] = Field(
        description="Select several options with titles",
        json_schema_extra={
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                ]
            }
        },
    )


# SEP-1613/SEP-2106: a 2020-12 input schema whose keywords must survive tools/list.
SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _elicit_form(message: str, field: str) -> types.ElicitRequest:
    schema = {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}
    return types.ElicitRequest(
        params=types.ElicitRequestFormParams(message=message, requested_schema=schema)
    )


def _sampling(text: str) -> types.CreateMessageRequest:
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(
            messages=[
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=text)
                )
            ],
            max_tokens=50,
        )
    )


def build_server() -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        name="agentwall-conformance-fixture",
        version="1.0.0",
        # A fixed key: requestState sealed by one run of the fixture stays
        # verifiable in the same run, which is all the scenarios need.
        request_state_security=RequestStateSecurity(keys=[b"agentwall-conformance-fixture-key!!"]),
    )
    subscribers: dict[str, list[ServerSession]] = {}

    # ----- tools: content types -----
    @server.tool()
    def test_simple_text() -> str:
        """Tests simple text content response"""
        return "This is a simple text response for testing."

    @server.tool()
    def test_image_content() -> list[types.ImageContent]:
        """Tests image content response"""
        return [types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")]

    @server.tool()
    def test_audio_content() -> list[types.AudioContent]:
        """Tests audio content response"""
        return [types.AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")]

    def embedded(uri: str, mime: str, text: str) -> types.EmbeddedResource:
        return types.EmbeddedResource(
            type="resource",
            resource=types.TextResourceContents(uri=uri, mime_type=mime, text=text),
        )

    @server.tool()
    def test_embedded_resource() -> list[types.EmbeddedResource]:
        """Tests embedded resource content response"""
        return [
            embedded(
                "test://embedded-resource", "text/plain", "This is an embedded resource content."
            )
        ]

    @server.tool()
    def test_multiple_content_types() -> list[
        types.TextContent | types.ImageContent | types.EmbeddedResource
    ]:
        """Tests response with multiple content types (text, image, resource)"""
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png"),
            embedded(
                "test://mixed-content-resource",
                "application/json",
                json.dumps({"test": "data", "value": 123}),
            ),
        ]

    @server.tool()
    def test_error_handling() -> str:
        """Tests error response handling"""
        raise RuntimeError("This tool intentionally returns an error for testing")

    # ----- tools: notifications during a call -----
    @server.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Tests tool that emits log messages during execution"""
        for i, text in enumerate(
            ("Tool execution started", "Tool processing data", "Tool execution completed")
        ):
            if i:
                await asyncio.sleep(0.05)
            await ctx.info(text)
        return "Tool with logging executed successfully"

    @server.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Tests tool that reports progress notifications"""
        for i, value in enumerate((0, 50, 100)):
            if i:
                await asyncio.sleep(0.05)
            await ctx.report_progress(
                progress=value, total=100, message=f"Completed step {value} of 100"
            )
        meta = ctx.request_context.meta
        return str(meta.get("progress_token") if meta else 0)

    @server.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Closes this call's SSE stream mid-call (SEP-1699); the result only
        reaches a client that resumes with Last-Event-ID."""
        await ctx.info("Before disconnect")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        await ctx.info("After reconnect")
        return "Reconnection test completed"

    # ----- tools: server -> client requests (handshake era) -----
    @server.tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Tests server-initiated sampling (LLM completion request)"""
        try:
            result = await ctx.session.create_message(
                messages=[
                    types.SamplingMessage(
                        role="user", content=types.TextContent(type="text", text=prompt)
                    )
                ],
                max_tokens=100,
                related_request_id=ctx.request_id,
            )
        except Exception as exc:
            return f"Sampling not supported or error: {exc}"
        text = result.content.text if result.content.type == "text" else "No response"
        return f"LLM response: {text}"

    async def elicit_and_report(ctx: Context, message: str, schema: type[BaseModel]) -> str:
        try:
            result = await ctx.elicit(message=message, schema=schema)
        except Exception as exc:
            return f"Elicitation not supported or error: {exc}"
        content = result.data.model_dump_json() if result.action == "accept" else "{}"
        return f"Elicitation completed: action={result.action}, content={content}"

    @server.tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Tests server-initiated elicitation (user input request)"""
        text = await elicit_and_report(ctx, message, UserResponse)
        return text.replace("Elicitation completed", "User response", 1)

    @server.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Tests elicitation with default values per SEP-1034"""
        return await elicit_and_report(
            ctx, "Please review and update the form fields with defaults", DefaultsForm
        )

    @server.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Tests elicitation with enum schema improvements per SEP-1330"""
        return await elicit_and_report(ctx, "Please select options from the enum fields", EnumForm)

    @server.tool(name="json_schema_2020_12_tool")
    def json_schema_2020_12_tool() -> str:
        """Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)"""
        return "json_schema_2020_12_tool called"

    # MCPServer derives input schemas from signatures; this one must be the
    # literal 2020-12 document.
    tool = server._tool_manager.get_tool("json_schema_2020_12_tool")
    assert tool is not None
    tool.parameters = SCHEMA_2020_12

    @server.tool()
    def test_x_mcp_header(
        region: str = Field(
            default="<none>",
            description="Mirrored into the Mcp-Param-Region header",
            json_schema_extra={"x-mcp-header": "Region"},
        ),
    ) -> str:
        """SEP-2243: a parameter mirrored into an Mcp-Param-* header"""
        return f"region={region}"

    @server.tool()
    async def test_missing_capability(ctx: Context) -> str:
        """Needs the client's sampling capability; a protocol error without it"""
        caps = ctx.session.client_capabilities
        if caps is None or caps.sampling is None:
            raise MCPError(
                code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="This tool requires the client 'sampling' capability",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return "sampling declared"

    # ----- tools: 2026-07-28 multi-round-trip (InputRequiredResult) -----
    @server.tool()
    async def test_input_required_result_elicitation(
        ctx: Context,
    ) -> str | types.InputRequiredResult:
        """MRTR: an InputRequiredResult with one elicitation"""
        answer = (ctx.input_responses or {}).get("user_name")
        if isinstance(answer, types.ElicitResult):
            return f"Hello, {(answer.content or {}).get('name', 'stranger')}!"
        return types.InputRequiredResult(
            input_requests={"user_name": _elicit_form("What is your name?", "name")}
        )

    @server.tool()
    async def test_input_required_result_sampling(ctx: Context) -> str | types.InputRequiredResult:
        """MRTR: an InputRequiredResult with one sampling request"""
        answer = (ctx.input_responses or {}).get("capital_question")
        if isinstance(answer, types.CreateMessageResult):
            text = answer.content.text if answer.content.type == "text" else "?"
            return f"Model said: {text}"
        return types.InputRequiredResult(
            input_requests={"capital_question": _sampling("What is the capital of France?")}
        )

    @server.tool()
    async def test_input_required_result_list_roots(
        ctx: Context,
    ) -> str | types.InputRequiredResult:
        """MRTR: an InputRequiredResult with one roots/list request"""
        answer = (ctx.input_responses or {}).get("client_roots")
        if isinstance(answer, types.ListRootsResult):
            return f"Client exposed {len(answer.roots)} root(s)."
        return types.InputRequiredResult(input_requests={"client_roots": types.ListRootsRequest()})

    def confirm_request() -> types.ElicitRequest:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        return types.ElicitRequest(
            params=types.ElicitRequestFormParams(message="Please confirm", requested_schema=schema)
        )

    @server.tool()
    async def test_input_required_result_request_state(
        ctx: Context,
    ) -> str | types.InputRequiredResult:
        """MRTR: requestState round-trips"""
        if "confirm" in (ctx.input_responses or {}) and ctx.request_state == "state-nonce":
            return "state-ok: confirmation received"
        return types.InputRequiredResult(
            input_requests={"confirm": confirm_request()}, request_state="state-nonce"
        )

    @server.tool()
    async def test_input_required_result_multiple_inputs(
        ctx: Context,
    ) -> str | types.InputRequiredResult:
        """MRTR: elicitation, sampling and roots in one InputRequiredResult"""
        if {"user_name", "greeting", "client_roots"} <= (ctx.input_responses or {}).keys():
            return "All inputs received."
        return types.InputRequiredResult(
            input_requests={
                "user_name": _elicit_form("What is your name?", "name"),
                "greeting": _sampling("Generate a greeting"),
                "client_roots": types.ListRootsRequest(),
            },
            request_state="multiple-inputs",
        )

    @server.tool()
    async def test_input_required_result_multi_round(
        ctx: Context,
    ) -> str | types.InputRequiredResult:
        """MRTR: three rounds, the state evolving"""
        state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
        answers = ctx.input_responses or {}
        step1, step2 = answers.get("step1"), answers.get("step2")
        if state["round"] == 1 and isinstance(step1, types.ElicitResult):
            name = (step1.content or {}).get("name")
            return types.InputRequiredResult(
                input_requests={"step2": _elicit_form("Step 2: favourite colour?", "color")},
                request_state=json.dumps({"round": 2, "name": name}),
            )
        if state["round"] == 2 and isinstance(step2, types.ElicitResult):
            return f"{state.get('name')} likes {(step2.content or {}).get('color')}."
        return types.InputRequiredResult(
            input_requests={"step1": _elicit_form("Step 1: What is your name?", "name")},
            request_state=json.dumps({"round": 1}),
        )

    @server.tool()
    async def test_input_required_result_tampered_state(
        ctx: Context,
    ) -> str | types.InputRequiredResult:
        """MRTR: a tampered requestState is refused (by the SDK's sealing)"""
        if ctx.request_state is None:
            return types.InputRequiredResult(
                input_requests={"confirm": confirm_request()}, request_state="round-1"
            )
        return f"state-ok: {ctx.request_state}"

    @server.tool()
    async def test_input_required_result_capabilities(ctx: Context) -> types.InputRequiredResult:
        """MRTR: only ask for what the client declared"""
        caps = ctx.client_capabilities
        wanted: dict[str, types.InputRequest] = {}
        if caps is None or caps.sampling is not None:
            wanted["sample"] = _sampling("Say hello")
        if caps is None or caps.elicitation is not None:
            wanted["ask"] = _elicit_form("What is your name?", "name")
        return types.InputRequiredResult(input_requests=wanted, request_state="capability-gated")

    # Diagnostic tools the 2026-07-28 server-stateless scenario looks for.
    @server.tool()
    async def test_streaming_elicitation(ctx: Context) -> str:
        """Diagnostic tool validating response progress streams"""
        await ctx.report_progress(progress=50, total=100)
        return "Streaming complete"

    @server.tool()
    async def test_logging_tool(ctx: Context) -> str:
        """Diagnostic logging validator tool (logs only when the request opted in)"""
        await ctx.info("Diagnostic trace logging activated")
        return "Logging evaluated"

    def _dynamic() -> str:
        """Added and removed again by the trigger tools."""
        return "dynamic"

    @server.tool()
    async def test_trigger_tool_change(ctx: Context) -> str:
        """Changes the tool list and announces it on subscriptions/listen"""
        server.add_tool(_dynamic, name="test_dynamic_tool")
        server.remove_tool("test_dynamic_tool")
        await ctx.notify_tools_changed()
        return "tool list changed"

    @server.tool()
    async def test_trigger_prompt_change(ctx: Context) -> str:
        """Changes the prompt list and announces it on subscriptions/listen"""
        server.add_prompt(
            Prompt.from_function(_dynamic, name="test_dynamic_prompt", description="dynamic")
        )
        server.remove_prompt("test_dynamic_prompt")
        await ctx.notify_prompts_changed()
        return "prompt list changed"

    # ----- tools only tests/conformance uses -----
    @server.tool()
    async def test_touch_watched_resource(uri: str = WATCHED_URI) -> int:
        """Send notifications/resources/updated for uri to its subscribers (on
        their GET streams); returns how many sessions were told."""
        told = 0
        for session in list(subscribers.get(uri, ())):
            await session.send_resource_updated(uri)
            told += 1
        return told

    @server.tool()
    async def test_wait_for_file(path: str, ctx: Context) -> str:
        """Report progress 1, then wait (at most 30 s) until path exists."""
        await ctx.report_progress(progress=1, total=2, message="waiting")
        for _ in range(600):
            if await asyncio.to_thread(Path(path).exists):
                return f"saw {path}"
            await asyncio.sleep(0.05)
        return "gave up"

    # ----- resources -----
    @server.resource("test://static-text", mime_type="text/plain")
    def static_text() -> str:
        """A static text resource for testing"""
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        """A static binary resource (image) for testing"""
        return base64.b64decode(PNG_BASE64)

    @server.resource("test://template/{id}/data", mime_type="application/json")
    def template(id: str) -> str:
        """A resource template with parameter substitution"""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource(WATCHED_URI, mime_type="text/plain")
    def watched() -> str:
        """A resource clients may subscribe to"""
        return "Watched resource content"

    # ----- prompts -----
    def user_text(text: str) -> UserMessage:
        return UserMessage(role="user", content=types.TextContent(type="text", text=text))

    @server.prompt()
    def test_simple_prompt() -> list[UserMessage]:
        """A simple prompt without arguments"""
        return [user_text("This is a simple prompt for testing.")]

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        """A prompt with required arguments"""
        return [user_text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        """A prompt that includes an embedded resource"""
        return [
            UserMessage(
                role="user",
                content=embedded(
                    resourceUri, "text/plain", "Embedded resource content for testing."
                ),
            ),
            user_text("Please process the embedded resource above."),
        ]

    @server.prompt()
    def test_prompt_with_image() -> list[UserMessage]:
        """A prompt that includes image content"""
        return [
            UserMessage(
                role="user",
                content=types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png"),
            ),
            user_text("Please analyze the image above."),
        ]

    @server.prompt()
    async def test_input_required_result_prompt(
        ctx: Context,
    ) -> list[UserMessage] | types.InputRequiredResult:
        """MRTR from prompts/get"""
        answer = (ctx.input_responses or {}).get("user_context")
        if isinstance(answer, types.ElicitResult):
            return [
                user_text(f"Use the following context: {(answer.content or {}).get('context')}")
            ]
        return types.InputRequiredResult(
            input_requests={"user_context": _elicit_form("What context?", "context")}
        )

    # ----- logging, subscriptions, completion (handshake-era methods) -----
    async def set_level(
        ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        log.info("log level set to %s", params.level)
        return types.EmptyResult()

    async def subscribe(
        ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        subscribers.setdefault(str(params.uri), []).append(ctx.session)
        return types.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        # Sessions are per request; the connection behind them is what a
        # subscription belongs to.
        conn = ctx.session._connection
        kept = [s for s in subscribers.get(str(params.uri), []) if s._connection is not conn]
        subscribers[str(params.uri)] = kept
        return types.EmptyResult()

    low = server._lowlevel_server
    low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)

    @server.completion()
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion:
        # The reference fixture answers with no values; a prefix match on the
        # argument's value lets tests/conformance tell a relayed answer apart.
        values = [v for v in ("alpha", "beta", "gamma") if v.startswith(argument.value)]
        return types.Completion(values=values, total=len(values), has_more=False)

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--retry-ms", type=int, default=100, help="SSE retry hint (polling)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    loopback = ["127.0.0.1", "localhost", "[::1]"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:*" for h in loopback] + loopback,
        allowed_origins=[f"http://{h}:*" for h in loopback] + [f"http://{h}" for h in loopback],
    )
    build_server().run(
        transport="streamable-http",
        host=args.host,
        port=args.port,
        event_store=MemoryEventStore(),
        retry_interval=args.retry_ms,
        transport_security=security,
    )


if __name__ == "__main__":
    main()
