"""Where ``agentwall start`` is not transparent: findings from running the
official conformance harness through it (docs/conformance.md), each pinned as
a strict xfail so the test turns red the day the bug is fixed and the marker
must go. Every finding has a control that passes against the fixture directly,
so the failure is the proxy's, not the fixture's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import mcp_types as types
import pytest
from conformance_support import (
    MODERN,
    Proxy,
    Raw,
    agentwall,
    modern_headers,
    modern_meta,
    read_events,
)
from mcp import Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def listen_first_event(url: str) -> dict[str, Any] | None:
    """POST subscriptions/listen (2026-07-28) and return the first message on
    the stream, or None if none comes within 30 s (the bound only limits how
    long a failure takes to show; a loaded host can be slow to answer)."""
    listen = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "subscriptions/listen",
        "params": {"notifications": {"toolsListChanged": True}, "_meta": modern_meta()},
    }
    conn, resp = Raw(url, timeout=30).open(
        "POST", listen, headers=modern_headers("subscriptions/listen")
    )
    try:
        assert resp.status == 200
        try:
            events = read_events(resp, until=lambda e: e.message is not None, timeout=30)
        except TimeoutError:
            return None
        return next((e.message for e in events if e.message), None)
    finally:
        conn.close()


ACK = "notifications/subscriptions/acknowledged"


def test_listen_acknowledgement_directly(stack: tuple[str, Proxy]) -> None:
    upstream, _ = stack
    first = listen_first_event(upstream)
    assert first is not None
    assert first["method"] == ACK


def test_listen_acknowledgement_through_agentwall(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack
    first = listen_first_event(proxy.url)
    assert first is not None
    assert first["method"] == ACK


def unsupported_version(url: str) -> tuple[int, dict[str, Any]]:
    meta = {**modern_meta(), "io.modelcontextprotocol/protocolVersion": "v999.0.0"}
    reply = Raw(url).post(
        {"jsonrpc": "2.0", "id": 301, "method": "server/discover", "params": {"_meta": meta}},
        headers={**modern_headers("server/discover"), "MCP-Protocol-Version": "v999.0.0"},
    )
    return reply.status, reply.messages[0]


def test_unsupported_version_directly(stack: tuple[str, Proxy]) -> None:
    status, message = unsupported_version(stack[0])
    assert status == 400
    assert message["id"] == 301
    assert message["error"]["code"] == -32022


def test_unsupported_version_error_carries_the_request_id(stack: tuple[str, Proxy]) -> None:
    status, message = unsupported_version(stack[1].url)
    assert status == 400
    assert message["error"]["code"] == -32022
    assert message["id"] == 301


def missing_meta(url: str) -> tuple[int, dict[str, Any]]:
    reply = Raw(url).post(
        {"jsonrpc": "2.0", "id": 101, "method": "tools/list"},
        headers=modern_headers("tools/list"),
    )
    return reply.status, reply.messages[0]


def test_missing_meta_directly(stack: tuple[str, Proxy]) -> None:
    status, message = missing_meta(stack[0])
    assert (status, message["error"]["code"]) == (400, -32602)


def test_missing_meta_is_invalid_params(stack: tuple[str, Proxy]) -> None:
    status, message = missing_meta(stack[1].url)
    assert (status, message["error"]["code"]) == (400, -32602)


async def roots_round_trip(url: str) -> str:
    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///workspace/project")])

    async with Client(url, mode=MODERN, list_roots_callback=roots) as client:
        result = await client.call_tool("test_input_required_result_list_roots", {})
        return result.content[0].text  # type: ignore[union-attr,no-any-return]


def test_roots_round_trip_directly(stack: tuple[str, Proxy]) -> None:
    text = asyncio.run(asyncio.wait_for(roots_round_trip(stack[0]), 30))
    assert text == "Client exposed 1 root(s)."


def test_roots_round_trip_through_agentwall(stack: tuple[str, Proxy]) -> None:
    text = asyncio.run(asyncio.wait_for(roots_round_trip(stack[1].url), 30))
    assert text == "Client exposed 1 root(s)."


# -- connection hygiene: a fresh proxy each, so gauges and logs are the test's own --------------


@pytest.fixture(scope="module")
def own_proxy(
    stack: tuple[str, Proxy], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    """A proxy of its own for the hygiene findings: what they leak must not
    disturb the shared one (a short drain: it has streams that never end)."""
    with agentwall(tmp_path_factory.mktemp("hygiene"), stack[0], "--drain-timeout", "1") as proxy:
        yield proxy


def eventually(check: Any, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def test_a_closed_get_stream_is_released(own_proxy: Proxy) -> None:
    raw = Raw(own_proxy.url)
    session, _ = raw.initialize()
    baseline = own_proxy.metric("agentwall_inflight")
    conn, stream = raw.open("GET", session=session)
    assert stream.status == 200
    assert eventually(lambda: own_proxy.metric("agentwall_inflight") == baseline + 1)
    conn.close()  # the client goes away without DELETE
    assert eventually(lambda: own_proxy.metric("agentwall_inflight") == baseline)


def half_close_post(url: str, body: bytes) -> bytes:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)  # done sending; keep reading
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_client_that_closes_after_its_request_leaks_no_task(own_proxy: Proxy) -> None:
    init = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "half-close", "version": "1"},
            },
        }
    ).encode()
    for _ in range(150):  # bounded: the collector runs well before this
        assert half_close_post(own_proxy.url, init).startswith(b"HTTP/1.1 200")
        if "Task was destroyed" in own_proxy.output.read_text(errors="replace"):
            break
    assert "Task was destroyed" not in own_proxy.output.read_text(errors="replace")
