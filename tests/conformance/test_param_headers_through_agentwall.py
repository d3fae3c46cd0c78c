"""Mcp-Param-* headers (MCP 2026-07-28, SEP-2243) through a real ``agentwall
start``: the official SDK client mirrors an ``x-mcp-header`` argument and the
proxy lets the agreeing header through to the SDK fixture server; a raw client
whose header lies is refused by the proxy itself (never judged, never
forwarded), the same way the fixture refuses it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conformance_support import Proxy, Raw, modern_headers, modern_meta
from mcp import Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOOL = "test_x_mcp_header"


def run(coro: Any, timeout: float = 40) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def region_call(rpc_id: int, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "method": "tools/call",
        "params": {"name": TOOL, "arguments": arguments, "_meta": modern_meta()},
    }


def refusals(proxy: Proxy) -> list[int]:
    out = []
    for line in proxy.log_path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if (entry.get("detail") or {}).get("stage") == "param_headers":
            out.append(entry["rpc_id"])
    return out


def test_sdk_client_mirrored_headers_pass(stack: tuple[str, Proxy]) -> None:
    _, proxy = stack

    async def go() -> tuple[str, list[str]]:
        async with Client(proxy.url, mode="auto") as client:
            await client.list_tools()
            texts = []
            for arguments in ({"region": "eu-west1"}, {"region": " Zürich "}, {}):
                result = await client.call_tool(TOOL, arguments)
                texts.append(result.content[0].text)  # type: ignore[union-attr]
            return client.protocol_version, texts

    version, texts = run(go())
    assert version == "2026-07-28"
    assert texts == ["region=eu-west1", "region= Zürich ", "region=<none>"]


@pytest.mark.parametrize(
    ("rpc_id", "arguments", "param"),
    [
        (41, {"region": "us-west1"}, {"Mcp-Param-Region": "eu-west1"}),  # lies
        (42, {"region": "us-west1"}, {}),  # missing
        (43, {}, {"Mcp-Param-Region": "us-west1"}),  # no such argument
        (44, {"region": "Zürich"}, {"Mcp-Param-Region": "=?base64?WnVyaWNo?="}),  # "Zurich"
    ],
    ids=["lie", "missing", "no-argument", "base64-lie"],
)
def test_lying_param_header_is_refused_by_the_proxy(
    stack: tuple[str, Proxy], rpc_id: int, arguments: dict[str, Any], param: dict[str, str]
) -> None:
    upstream, proxy = stack
    listing = {
        "jsonrpc": "2.0",
        "id": 40,
        "method": "tools/list",
        "params": {"_meta": modern_meta()},
    }
    assert Raw(proxy.url).post(listing, headers=modern_headers("tools/list")).status == 200
    before = len(proxy.decisions())
    headers = {**modern_headers("tools/call", TOOL), **param}
    reply = Raw(proxy.url).post(region_call(rpc_id, arguments), headers=headers)
    assert reply.status == 400
    error = reply.answer(rpc_id)["error"]
    assert error["code"] == -32020
    assert "Mcp-Param-Region" in error["message"]
    assert len(proxy.decisions()) == before  # never judged, never forwarded
    assert rpc_id in refusals(proxy)  # refused by the proxy, and audited
    # The SDK fixture refuses the same request the same way.
    direct = Raw(upstream).post(region_call(rpc_id, arguments), headers=headers)
    assert (direct.status, direct.answer(rpc_id)["error"]["code"]) == (400, -32020)
