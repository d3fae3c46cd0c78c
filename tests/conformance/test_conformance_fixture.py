"""The conformance fixture server and its policy stay in step."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import yaml
from everything_server import build_server

HERE = Path(__file__).resolve().parent
POLICY = HERE / "fixture-policy.yaml"

# What @modelcontextprotocol/conformance's server scenarios call by name
# (its reference fixture, examples/servers/typescript/everything-server.ts).
HARNESS_TOOLS = {
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_error_handling",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "json_schema_2020_12_tool",
    "test_reconnection",
    "test_streaming_elicitation",
    "test_logging_tool",
}
HARNESS_PROMPTS = {
    "test_simple_prompt",
    "test_prompt_with_arguments",
    "test_prompt_with_embedded_resource",
    "test_prompt_with_image",
}


def offered() -> tuple[set[str], set[str], set[str]]:
    server = build_server()

    async def listing() -> tuple[set[str], set[str], set[str]]:
        tools = {t.name for t in await server.list_tools()}
        prompts = {p.name for p in await server.list_prompts()}
        uris = {str(r.uri) for r in await server.list_resources()}
        uris |= {t.uri_template for t in await server.list_resource_templates()}
        return tools, prompts, uris

    return asyncio.run(listing())


def test_fixture_offers_what_the_harness_calls() -> None:
    tools, prompts, uris = offered()
    assert tools >= HARNESS_TOOLS
    assert prompts >= HARNESS_PROMPTS
    assert {"test://static-text", "test://static-binary", "test://watched-resource"} <= uris
    assert "test://template/{id}/data" in uris


def test_policy_allows_exactly_the_fixture() -> None:
    tools, prompts, _ = offered()
    policy = yaml.safe_load(POLICY.read_text(encoding="utf-8"))
    assert policy["default_action"] == "deny"
    assert {t["name"] for t in policy["tools"] if t["action"] == "allow"} == tools
    assert {p["name"] for p in policy["prompts"] if p["action"] == "allow"} == prompts
    assert policy["resources"] == [{"uri": "test://.*", "action": "allow"}]
    assert "safe_mode" not in policy  # Safe Mode stays fully on: it is part of what is tested


def test_policy_loads() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentwall", "test", "--policy", str(POLICY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "policy OK" in proc.stdout
