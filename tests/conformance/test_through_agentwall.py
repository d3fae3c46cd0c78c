"""What the conformance harness's server scenarios exercise, through a real
``agentwall start``: the official SDK client (and, where the wire itself is
the point, a raw HTTP client) -> agentwall -> the SDK fixture server
(everything_server.py) over streamable HTTP. Each behaviour is also checked
against the fixture directly where that shows the proxy changed nothing.

Covers what tests/integration and tests/io/test_http* do not: ping,
logging/setLevel, completion, resources/subscribe with updates on the GET
stream, several SSE streams at once, Last-Event-ID resumption, DELETE and 404
after the session, version negotiation and a bad version header, DNS-rebinding
Host/Origin, and 2026-07-28 Mcp-Method/Mcp-Name mismatches.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from conformance_support import (
    LEGACY,
    MODERN,
    Proxy,
    Raw,
    modern_headers,
    modern_meta,
    read_events,
)
from mcp import Client
from mcp.shared.exceptions import MCPError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    # ping, logging/setLevel, resources/subscribe are handshake-era features
    # the SDK marks deprecated; testing them is the point.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]


def run(coro: Any, timeout: float = 40) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def decided(proxy: Proxy, method: str, origin: str = "client") -> list[str]:
    out = []
    for entry in proxy.decisions():
        entry_origin = (entry.get("detail") or {}).get("origin", "client")
        if entry.get("method") == method and entry_origin == origin:
            out.append(entry["decision"])
    return out


# -- ping, logging, completion --------------------------------------------------------------------


def test_ping_is_judged_and_answered(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack
    before = len(decided(proxy, "ping"))

    async def ping() -> object:
        async with Client(proxy.url, mode="legacy") as client:
            return await client.send_ping()

    assert isinstance(run(ping()), types.EmptyResult)
    assert decided(proxy, "ping")[before:] == ["allow"]


def test_logging_set_level_and_log_notifications_before_the_result(
    stack: tuple[str, Proxy],
) -> None:
    _, proxy = stack
    seen: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        seen.append(f"{params.level}:{params.data}")

    async def go() -> str:
        async with Client(proxy.url, mode="legacy", logging_callback=on_log) as client:
            await client.set_logging_level("debug")
            result = await client.call_tool("test_tool_with_logging", {})
            seen.append("result")
            return result.content[0].text  # type: ignore[union-attr,no-any-return]

    assert run(go()) == "Tool with logging executed successfully"
    assert seen == [
        "info:Tool execution started",
        "info:Tool processing data",
        "info:Tool execution completed",
        "result",
    ]
    assert decided(proxy, "logging/setLevel")[-1:] == ["allow"]
    assert decided(proxy, "notifications/message", "server")[-3:] == ["allow"] * 3


def test_completion_is_relayed(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack

    async def go() -> list[str]:
        async with Client(proxy.url, mode="legacy") as client:
            ref = types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments")
            answer = await client.complete(ref, {"name": "arg1", "value": "be"})
            return answer.completion.values

    assert run(go()) == ["beta"]
    assert decided(proxy, "completion/complete")[-1:] == ["allow"]


# -- resources/subscribe and the GET stream -------------------------------------------------------


def test_subscribe_and_updated_notification_through_the_sdk(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack
    uri = "test://watched-resource"

    async def go() -> tuple[list[str], int, int]:
        updates: list[str] = []
        arrived = asyncio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                updates.append(str(message.params.uri))
                arrived.set()

        async with Client(proxy.url, mode="legacy", message_handler=on_message) as client:
            await client.subscribe_resource(uri)
            touched = 0
            # The SDK opens its GET stream in the background; touch until it
            # is there to carry the notification (bounded).
            for _ in range(50):
                result = await client.call_tool("test_touch_watched_resource", {"uri": uri})
                touched = result.structured_content["result"]  # type: ignore[index]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 0.2)
                if arrived.is_set():
                    break
            await client.unsubscribe_resource(uri)
            after = await client.call_tool("test_touch_watched_resource", {"uri": uri})
            return updates, touched, after.structured_content["result"]  # type: ignore[index]

    updates, touched, after = run(go())
    assert touched == 1
    assert updates
    assert set(updates) == {uri}
    assert after == 0  # the unsubscribe reached the upstream
    assert "allow" in decided(proxy, "notifications/resources/updated", "server")


def test_updated_notification_arrives_on_the_get_stream(stack: tuple[str, Proxy]) -> None:
    """Raw: the notification comes on the standalone GET stream, with the
    upstream's event id, while the POST that caused it gets only its result."""
    _, proxy = stack
    raw = Raw(proxy.url)
    session, _ = raw.initialize()
    uri = "test://watched-resource"
    sub = raw.post(
        {"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": uri}},
        session=session,
    )
    assert sub.answer(1) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    conn, stream = raw.open("GET", session=session)
    try:
        assert stream.status == 200
        assert stream.getheader("content-type", "").startswith("text/event-stream")
        touch = raw.post(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "test_touch_watched_resource", "arguments": {"uri": uri}},
            },
            session=session,
        )
        assert touch.answer(2)["result"]["structuredContent"] == {"result": 1}
        assert [m.get("method") for m in touch.messages] == [None]  # only the result
        events = read_events(stream, until=lambda e: e.message is not None, timeout=10)
        updated = events[-1]
        assert updated.message == {
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"uri": uri},
        }
        assert updated.id  # the upstream's event id, relayed for resumption
    finally:
        conn.close()
    assert raw.send("DELETE", session=session).status == 200


def test_subscribe_to_a_denied_uri_never_reaches_the_upstream(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack

    async def go() -> tuple[int, int]:
        async with Client(proxy.url, mode="legacy") as client:
            with pytest.raises(MCPError) as denied:
                await client.subscribe_resource("secret://vault")
            told = await client.call_tool("test_touch_watched_resource", {"uri": "secret://vault"})
            return denied.value.error.code, told.structured_content["result"]  # type: ignore[index]

    assert run(go()) == (-32001, 0)


# -- several SSE streams at once, and resumption --------------------------------------------------


def test_three_sse_streams_at_once(stack: tuple[str, Proxy], tmp_path: Path) -> None:
    """Three tool calls, each on its own POST SSE stream, all hold until the
    test has seen progress from every one: a proxy that serialised or
    buffered the streams would time out."""
    _, proxy = stack
    go_file = tmp_path / "go"

    async def go() -> list[str]:
        progressed = [asyncio.Event() for _ in range(3)]

        def on_progress(i: int) -> Any:
            async def callback(value: float, total: float | None, message: str | None) -> None:
                progressed[i].set()

            return callback

        async with Client(proxy.url, mode="legacy") as client:
            calls = [
                asyncio.create_task(
                    client.call_tool(
                        "test_wait_for_file",
                        {"path": str(go_file)},
                        progress_callback=on_progress(i),
                        read_timeout_seconds=40,
                    )
                )
                for i in range(3)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in progressed)), 20)
            assert not any(c.done() for c in calls)
            go_file.write_text("go")
            results = await asyncio.gather(*calls)
            return [r.content[0].text for r in results]  # type: ignore[union-attr]

    assert run(go()) == [f"saw {go_file}"] * 3


def test_resumption_with_last_event_id_through_the_sdk(stack: tuple[str, Proxy]) -> None:
    """test_reconnection closes its SSE stream before answering; only a
    client that resumes with GET + Last-Event-ID gets the result."""
    _, proxy = stack
    logs: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    async def go() -> str:
        async with Client(proxy.url, mode="legacy", logging_callback=on_log) as client:
            result = await client.call_tool("test_reconnection", {}, read_timeout_seconds=30)
            return result.content[0].text  # type: ignore[union-attr,no-any-return]

    assert run(go()) == "Reconnection test completed"
    assert logs == ["Before disconnect", "After reconnect"]


@pytest.mark.parametrize("target", ["direct", "proxy"])
def test_resumption_with_last_event_id_on_the_wire(stack: tuple[str, Proxy], target: str) -> None:
    upstream, proxy = stack
    raw = Raw(upstream if target == "direct" else proxy.url)
    session, _ = raw.initialize()
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "test_reconnection", "arguments": {}},
    }
    cut = raw.post(call, session=session)
    assert cut.status == 200
    # A priming event (an id, no data, the retry hint), maybe the first log,
    # then the stream ends without the result.
    priming = cut.events[0]
    assert priming.id
    assert priming.data == ""
    assert priming.retry == 100
    assert all("id" not in m for m in cut.messages)
    last_id = cut.events[-1].id
    assert last_id
    conn, resumed = raw.open("GET", session=session, headers={"Last-Event-ID": last_id})
    try:
        assert resumed.status == 200
        events = read_events(resumed, until=lambda e: (e.message or {}).get("id") == 7)
    finally:
        conn.close()
    messages = cut.messages + [m for e in events if (m := e.message)]
    logs = [m["params"]["data"] for m in messages if m.get("method") == "notifications/message"]
    assert logs == ["Before disconnect", "After reconnect"]  # each once: no replay of seen events
    assert messages[-1]["result"]["content"][0]["text"] == "Reconnection test completed"
    ids = [e.id for e in cut.events + events if e.id]
    assert len(ids) == len(set(ids))
    assert raw.send("DELETE", session=session).status == 200


# -- sessions -------------------------------------------------------------------------------------


def session_walk(url: str) -> list[tuple[str, int]]:
    raw = Raw(url)
    session, _ = raw.initialize()
    list_tools = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    steps = [("tools/list", raw.post(list_tools, session=session).status)]
    steps.append(("DELETE", raw.send("DELETE", session=session).status))
    steps.append(("tools/list after DELETE", raw.post(list_tools, session=session).status))
    steps.append(("GET after DELETE", raw.send("GET", session=session).status))
    steps.append(("DELETE again", raw.send("DELETE", session=session).status))
    unknown = "0123456789abcdef0123456789abcdef"
    steps.append(("unknown session", raw.post(list_tools, session=unknown).status))
    return steps


def test_delete_ends_the_session_and_then_404(stack: tuple[str, Proxy]) -> None:
    upstream, proxy = stack
    through = session_walk(proxy.url)
    assert through == [
        ("tools/list", 200),
        ("DELETE", 200),
        ("tools/list after DELETE", 404),
        ("GET after DELETE", 404),
        ("DELETE again", 404),
        ("unknown session", 404),
    ]
    assert through == session_walk(upstream)


# -- protocol versions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "agreed"),
    [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"), ("1999-01-01", LEGACY)],
)
def test_version_negotiation_is_the_upstreams(
    stack: tuple[str, Proxy], asked: str, agreed: str
) -> None:
    upstream, proxy = stack
    for url in (upstream, proxy.url):
        raw = Raw(url)
        session, reply = raw.initialize(asked)
        assert reply.answer(0)["result"]["protocolVersion"] == agreed, url
        raw.send("DELETE", session=session)


def test_sdk_clients_negotiate_both_eras(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack

    async def version(mode: str) -> str:
        async with Client(proxy.url, mode=mode) as client:
            await client.call_tool("test_simple_text", {})
            return client.protocol_version

    assert run(version("legacy")) == LEGACY
    assert run(version("auto")) == MODERN


@pytest.mark.parametrize("bad", ["1999-01-01", "2025-11-25; DROP", "latest"])
def test_an_unknown_protocol_version_header_is_400(stack: tuple[str, Proxy], bad: str) -> None:
    upstream, proxy = stack
    statuses = []
    for url in (upstream, proxy.url):
        raw = Raw(url)
        session, _ = raw.initialize()
        reply = raw.post(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            session=session,
            headers={"MCP-Protocol-Version": bad},
        )
        statuses.append(reply.status)
        raw.send("DELETE", session=session)
        if url == proxy.url:
            # Addressed to the request's id, which is readable
            # (harness check sep-2575-http-server-error-jsonrpc-id).
            assert reply.answer(1)["error"]["code"] == -32022
            assert "2025-11-25" in reply.answer(1)["error"]["data"]["supported"]
    assert statuses == [400, 400]


# -- DNS rebinding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"Host": "evil.example:80"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
    ],
    ids=["host", "host-port", "origin", "origin-null"],
)
def test_rebinding_host_or_origin_is_403(stack: tuple[str, Proxy], headers: dict[str, str]) -> None:
    _, proxy = stack
    before = len(proxy.decisions())
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "rebinding", "version": "1"},
        },
    }
    reply = Raw(proxy.url).post(init, headers=headers)
    assert reply.status == 403
    assert "mcp-session-id" not in reply.headers  # the upstream never opened a session
    assert len(proxy.decisions()) == before  # refused before anything was judged


def test_a_loopback_origin_is_accepted(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack
    port = proxy.url.split(":")[2].split("/")[0]
    raw = Raw(proxy.url)
    reply = raw.post(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "browser", "version": "1"},
            },
        },
        headers={"Origin": f"http://localhost:{port}"},
    )
    assert reply.status == 200
    raw.send("DELETE", session=reply.headers["mcp-session-id"])


# -- 2026-07-28 routing headers -------------------------------------------------------------------


def modern_call(name: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": name, "arguments": {}, "_meta": modern_meta()},
    }


def test_modern_call_with_matching_headers_passes(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack
    reply = Raw(proxy.url).post(
        modern_call("test_simple_text"), headers=modern_headers("tools/call", "test_simple_text")
    )
    assert reply.status == 200
    text = reply.answer(9)["result"]["content"][0]["text"]
    assert text == "This is a simple text response for testing."


@pytest.mark.parametrize(
    "headers",
    [
        modern_headers("tools/call", "test_error_handling"),  # Mcp-Name lies
        modern_headers("tools/list", "test_simple_text"),  # Mcp-Method lies
        modern_headers("tools/call"),  # Mcp-Name missing
        {"MCP-Protocol-Version": MODERN},  # Mcp-Method missing
        modern_headers("tools/call", "=?base64?dGVzdF9lcnJvcl9oYW5kbGluZw==?="),  # encoded lie
    ],
    ids=["name-mismatch", "method-mismatch", "name-missing", "method-missing", "base64-name"],
)
def test_modern_header_body_mismatch_is_400_32020(
    stack: tuple[str, Proxy], headers: dict[str, str]
) -> None:
    upstream, proxy = stack
    before = len(proxy.decisions())
    reply = Raw(proxy.url).post(modern_call("test_simple_text"), headers=headers)
    assert reply.status == 400
    assert reply.answer(9)["error"]["code"] == -32020
    assert len(proxy.decisions()) == before  # never judged, never forwarded
    # The fixture refuses the same request the same way: the proxy's answer
    # is the one the upstream would have given.
    direct = Raw(upstream).post(modern_call("test_simple_text"), headers=headers)
    assert (direct.status, direct.answer(9)["error"]["code"]) == (400, -32020)


def test_modern_removed_method_gets_the_upstreams_404(stack: tuple[str, Proxy]) -> None:
    """Under 2026-07-28 ping is gone: the upstream answers HTTP 404 / -32601,
    and the proxy relays status and body unchanged."""
    upstream, proxy = stack
    ping = {"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"_meta": modern_meta()}}
    replies = [Raw(u).post(ping, headers=modern_headers("ping")) for u in (upstream, proxy.url)]
    assert [r.status for r in replies] == [404, 404]
    assert [r.answer(3)["error"]["code"] for r in replies] == [-32601, -32601]
